"""The batched weighted C equals lifelines' concordance_index, resample by resample."""

from __future__ import annotations

import numpy as np
import pytest
from lifelines.utils import concordance_index

from audit.stats.bootstrap import bootstrap_weights
from audit.stats.concordance import weighted_concordance


def _data(n, seed, time_decimals, risk_decimals):
    rng = np.random.default_rng(seed)
    time = np.round(rng.exponential(3, n), time_decimals)  # rounding makes tied times
    event = rng.random(n) < 0.6
    risk = np.round(rng.normal(size=n), risk_decimals)  # and tied scores
    return time, event, risk


@pytest.mark.parametrize(
    "n,chunk,tdec,rdec",
    [
        (40, 40, 0, 1),
        (400, 10**7, 0, 1),
        (2500, 10**7, 1, 2),
        (300, 1000, 3, 6),
        (777, 5000, 0, 0),
        (1, 10, 0, 1),
    ],
    ids=["tiny", "many-ties", "few-ties", "chunked", "odd-n-heavy-ties", "one-subject"],
)
def test_equals_lifelines_on_the_sample_and_on_every_resample(n, chunk, tdec, rdec):
    time, event, risk = _data(n, n, tdec, rdec)
    if n == 1:
        assert np.isnan(weighted_concordance(time, [1], risk, np.ones((1, 1)))[0])
        return
    plain = weighted_concordance(time, event, risk, np.ones((1, n)), chunk_elements=chunk)[0]
    assert plain == pytest.approx(concordance_index(time, -risk, event), abs=1e-12)
    weights = bootstrap_weights(n, 15, np.random.default_rng(1))
    ours = weighted_concordance(time, event, risk, weights, chunk_elements=chunk)
    for b in range(15):
        rows = np.repeat(np.arange(n), weights[b].astype(int))
        assert ours[b] == pytest.approx(
            concordance_index(time[rows], -risk[rows], event[rows]), abs=1e-12
        )


def test_edge_cases():
    t = np.array([1.0, 2.0, 3.0])
    assert np.isnan(weighted_concordance(t, [0, 0, 0], [1, 2, 3], np.ones((1, 3)))[0])
    assert weighted_concordance(t, [1, 1, 1], [3, 2, 1], np.ones((1, 3)))[0] == 1.0
    assert weighted_concordance(t, [1, 1, 1], [5, 5, 5], np.ones((1, 3)))[0] == 0.5
    w = bootstrap_weights(10, 4, np.random.default_rng(0))
    assert w.shape == (4, 10) and (w.sum(axis=1) == 10).all()
