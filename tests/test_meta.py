"""Pooling across sites (``audit.stats.meta``): on the BCG vaccine trials (Colditz et al.
1994; the data set of R's metafor, ``dat.bcg``, log risk ratios) REML equals metafor's
published output, DerSimonian-Laird equals statsmodels' ``combine_effects`` and a hand
computation, Hartung-Knapp equals statsmodels' WLS random effect with t; one site pools to
itself; sites with one true hazard ratio pool around it with I^2 near 0, and a site with
another falls outside the prediction interval and raises I^2."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from statsmodels.stats.meta_analysis import combine_effects

from audit.stats.meta import deleted_residuals, pool

# tpos, tneg, cpos, cneg of the 13 BCG trials (metafor's dat.bcg)
BCG = np.array(
    [
        [4, 119, 11, 128],
        [6, 300, 29, 274],
        [3, 228, 11, 209],
        [62, 13536, 248, 12619],
        [33, 5036, 47, 5761],
        [180, 1361, 372, 1079],
        [8, 2537, 10, 619],
        [505, 87886, 499, 87892],
        [29, 7470, 45, 7232],
        [17, 1699, 65, 1600],
        [186, 50448, 141, 27197],
        [5, 2493, 3, 2338],
        [27, 16886, 29, 17825],
    ],
    dtype=float,
)


def _bcg():
    a, b, c, d = BCG.T
    y = np.log((a / (a + b)) / (c / (c + d)))
    v = 1 / a - 1 / (a + b) + 1 / c - 1 / (c + d)
    return y, v


def test_reml_equals_metafors_published_bcg_output():
    # rma(yi, vi, data = escalc("RR", ai = tpos, bi = tneg, ci = cpos, di = cneg, data =
    # dat.bcg)): tau^2 0.3132, I^2 92.22%, H^2 12.86, Q(12) 152.2330, estimate -0.7145,
    # se 0.1798, CI -1.0669 to -0.3622 (metafor's documentation)
    y, v = _bcg()
    r = pool(y, v, "REML", hartung_knapp=False)
    assert r.tau2 == pytest.approx(0.3132, abs=5e-5)
    assert r.i2 == pytest.approx(0.9222, abs=5e-5) and r.h2 == pytest.approx(12.86, abs=5e-3)
    assert r.q == pytest.approx(152.2330, abs=5e-4) and r.q_p < 1e-4
    assert r.estimate == pytest.approx(-0.7145, abs=5e-5) and r.se == pytest.approx(
        0.1798, abs=5e-5
    )
    assert (r.low, r.high) == pytest.approx((-1.0669, -0.3622), abs=5e-5)


@pytest.mark.filterwarnings("ignore:`use_t=True` requires")  # (its per-study CIs, unused)
def test_dersimonian_laird_and_hartung_knapp_equal_statsmodels_and_a_hand_computation():
    y, v = _bcg()
    r = pool(y, v, "DL", hartung_knapp=True)
    ref = combine_effects(y, v, method_re="dl", use_t=True)
    frame = ref.summary_frame()
    assert r.tau2 == pytest.approx(ref.tau2, rel=1e-12)
    assert r.i2 == pytest.approx(ref.i2, rel=1e-12) and r.q == pytest.approx(ref.q, rel=1e-12)
    assert r.fixed == pytest.approx(frame.loc["fixed effect", "eff"], rel=1e-12)
    assert r.fixed_se == pytest.approx(frame.loc["fixed effect", "sd_eff"], rel=1e-12)
    assert r.estimate == pytest.approx(frame.loc["random effect", "eff"], rel=1e-12)
    assert r.se == pytest.approx(frame.loc["random effect", "sd_eff"], rel=1e-12)
    wls = frame.loc["random effect wls"]
    assert (r.low, r.high) == pytest.approx((wls["ci_low"], wls["ci_upp"]), rel=1e-9)
    # by hand: Q, C, tau^2, the weights
    w = 1 / v
    fixed = (w * y).sum() / w.sum()
    q = (w * (y - fixed) ** 2).sum()
    tau2 = (q - 12) / (w.sum() - (w**2).sum() / w.sum())
    wr = 1 / (v + tau2)
    assert r.tau2 == pytest.approx(tau2, rel=1e-12)
    assert r.estimate == pytest.approx((wr * y).sum() / wr.sum(), rel=1e-12)
    half = 2.2010 * np.sqrt(tau2 + 1 / wr.sum())  # t(0.975, 11)
    assert (r.pred_low, r.pred_high) == pytest.approx(
        (r.estimate - half, r.estimate + half), abs=1e-3
    )


def test_one_site_pools_to_its_own_estimate():
    r = pool([np.log(1.4)], [0.01])
    assert r.estimate == pytest.approx(np.log(1.4)) and r.se == pytest.approx(0.1)
    assert (r.low, r.high) == pytest.approx((np.log(1.4) - 0.196, np.log(1.4) + 0.196), abs=1e-3)
    assert r.tau2 == pytest.approx(0.0, abs=1e-12) and np.isnan(r.i2)


def _site(seed, beta, n=800):
    """A site's Cox log hazard ratio of a standard-normal score and its variance."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = rng.exponential(1 / (0.1 * np.exp(beta * x)))
    c = rng.uniform(0, 15, n)
    frame = pd.DataFrame({"x": x, "t": np.minimum(t, c), "e": (t <= c).astype(int)})
    fit = CoxPHFitter().fit(frame, "t", "e")
    return fit.params_["x"], fit.standard_errors_["x"] ** 2


def test_sites_with_one_hazard_ratio_agree_and_a_different_site_stands_out():
    true = np.log(1.5)
    same = [_site(s, true) for s in (1, 2, 3)]
    r = pool(*zip(*same))
    assert r.low <= true <= r.high and r.i2 < 0.3
    assert (np.abs(deleted_residuals(*zip(*same))) < 1.96).all()
    four = same + [_site(4, np.log(3.0))]
    r4 = pool(*zip(*four))
    assert r4.i2 > 0.5 and r4.i2 > r.i2
    z = deleted_residuals(*zip(*four))
    assert abs(z[3]) > 3 and (np.abs(z[:3]) < abs(z[3])).all()  # the planted site is flagged
