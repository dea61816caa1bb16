"""Known answers on real cohorts no one here wrote, audited through the CLI.

Predictions-only cohorts are built at test time from survival data that lifelines and
scikit-survival ship, with a real clinical score as the model's output (higher = worse):

- ``lung``: NCCTG lung cancer (lifelines; R's ``survival::lung``), ECOG performance score,
  4 distinct values (a tied score: quartile Q3 is empty);
- ``flchain``: serum free light chain kappa (scikit-survival's ``flchain``), 2,000 subjects
  drawn with seed 0 plus the 5 largest values, so the top score lies 18 SD above the mean
  (a heavy tail: lifelines' default step returns a wrong-sign HR of exp(-3.04) for the
  age/sex-adjusted score here, and the full cohort crashed the audit with exit 3);
- ``rossi``: recidivism after release (lifelines), prior convictions (counts, tied);
- ``gbsg2``: German breast cancer study (scikit-survival), positive lymph nodes (heavy
  right tail, women only);
- ``whas500``: Worcester heart attack study (scikit-survival), heart rate at admission;
- ``aids``: AIDS clinical trial (scikit-survival), minus the CD4 count (few deaths);
- ``breast_cancer``: scikit-survival's breast cancer cohort (198 women), tumour size against
  time to distant metastasis (a small cohort whose follow-up outlasts most horizons).

Every number is compared with one computed here independently: hazard ratios with
scikit-survival's ``CoxPHSurvivalAnalysis`` (Efron), Harrell's C and Kaplan-Meier with
lifelines, Uno's C and the AUC with scikit-survival, O/E with a Breslow estimator written
below, quartiles by counting numpy's quantiles below each value; to 3 decimals (absolute
5e-4) unless stated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import QUICK_CONFIG as CONFIG
from conftest import cli_run

TOL = 5e-4


def _lung():
    from lifelines.datasets import load_lung

    d = load_lung()
    return pd.DataFrame(
        {
            "age": d["age"],
            "sex": d["sex"].map({1: "male", 2: "female"}),
            "time": d["time"],
            "event": d["status"],
            "risk": d["ph.ecog"],
        }
    ), "days"


def _flchain():
    from sksurv.datasets import load_flchain

    x, y = load_flchain()
    d = pd.DataFrame(
        {
            "age": x["age"].astype(float).to_numpy(),
            "sex": x["sex"].map({"F": "female", "M": "male"}).to_numpy(),
            "time": y["futime"],
            "event": y["death"].astype(int),
            "risk": x["kappa"].astype(float).to_numpy(),
        }
    )
    d = pd.concat([d.sample(2000, random_state=0), d.nlargest(5, "risk")])
    return d[~d.index.duplicated()], "days"


def _rossi():
    from lifelines.datasets import load_rossi

    d = load_rossi()
    return pd.DataFrame(
        {
            "age": d["age"],
            "sex": "male",
            "time": d["week"] * 7,
            "event": d["arrest"],
            "risk": d["prio"],
        }
    ), "days"


def _gbsg2():
    from sksurv.datasets import load_gbsg2

    x, y = load_gbsg2()
    return pd.DataFrame(
        {
            "age": x["age"].to_numpy(),
            "sex": "female",
            "time": y["time"],
            "event": y["cens"].astype(int),
            "risk": x["pnodes"].astype(float).to_numpy(),
        }
    ), "days"


def _whas500():
    from sksurv.datasets import load_whas500

    x, y = load_whas500()
    return pd.DataFrame(
        {
            "age": x["age"].to_numpy(),
            "sex": x["gender"].astype(float).map({0.0: "male", 1.0: "female"}).to_numpy(),
            "time": y["lenfol"],
            "event": y["fstat"].astype(int),
            "risk": x["hr"].astype(float).to_numpy(),
        }
    ), "days"


def _aids():
    from sksurv.datasets import load_aids

    x, y = load_aids()
    return pd.DataFrame(
        {
            "age": x["age"].to_numpy(),
            "sex": x["sex"].astype(str).map({"1": "male", "2": "female"}).to_numpy(),
            "time": y["time"],
            "event": y["censor"].astype(int),
            "risk": -x["cd4"].astype(float).to_numpy(),
        }
    ), "days"


def _breast_cancer():
    from sksurv.datasets import load_breast_cancer

    x, y = load_breast_cancer()
    return pd.DataFrame(
        {
            "age": x["age"].to_numpy(),
            "sex": "female",
            "time": y["t.tdm"],
            "event": y["e.tdm"].astype(int),
            "risk": x["size"].astype(float).to_numpy(),
        }
    ), "days"


COHORTS = {"lung": _lung, "rossi": _rossi}
# (flchain's heavy tail stays in make test at the model level: test_cox)
SLOW = {
    "flchain": _flchain,
    "gbsg2": _gbsg2,
    "whas500": _whas500,
    "aids": _aids,
    "breast_cancer": _breast_cancer,
}


def _audit(tmp_path_factory, name: str, make) -> dict:
    """Write the cohort folder, audit it through the CLI, return its data and tables."""
    import duckdb

    frame, unit = make()
    frame = frame.reset_index(drop=True)
    frame.insert(0, "photo_id", [f"{name[0].upper()}{i:05d}" for i in range(len(frame))])
    root = tmp_path_factory.mktemp(name)
    folder = root / "cohort"
    folder.mkdir()
    frame.to_csv(folder / "manifest.csv", index=False)
    (folder / "cohort.yaml").write_text(f"name: real-{name}\ntime_unit: {unit}\n")
    # rossi's 432 subjects get the linearised C resamples that registry-sized cohorts get
    linear = "[survival]\nlinear_from = 400\n" if name == "rossi" else "[survival]\n"
    (root / "audit.toml").write_text(CONFIG.replace("[survival]\n", linear))
    code = cli_run(folder, "predictions:risk", root / "out", config=root / "audit.toml")
    assert code in (0, 1)  # a verdict, never an input error or a bug
    con = duckdb.connect(str(root / "out" / "audit.duckdb"), read_only=True)
    tables = {
        t: con.execute(f"SELECT * FROM {t}").df()
        for t in (
            "runs",
            "survival_models",
            "survival_terms",
            "survival_tests",
            "survival_metrics",
            "accuracy",
            "fairness",
            "verdicts",
            "quarantine",
            "run_stages",
        )
    }
    con.close()
    assert (tables["runs"]["status"] == "finished").all()
    data = frame.dropna(subset=["risk", "time", "event", "age"]).reset_index(drop=True)
    data["time"] = data["time"] / 365.25
    return {"data": data, **tables}


@pytest.fixture(
    scope="module", params=list(COHORTS) + [pytest.param(n, marks=pytest.mark.slow) for n in SLOW]
)
def real(request, tmp_path_factory, prefect_harness):
    make = {**COHORTS, **SLOW}[request.param]
    return request.param, _audit(tmp_path_factory, request.param, make)


# ----------------------------------------------------------------- independent values


def _sksurv_hr(x: pd.DataFrame, data: pd.DataFrame) -> np.ndarray:
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    x = x.loc[:, x.nunique() > 1]
    sd = x.std(ddof=1)
    est = CoxPHSurvivalAnalysis(ties="efron", n_iter=200, tol=1e-10).fit(
        ((x - x.mean()) / sd).to_numpy(float),
        Surv.from_arrays(event=data["event"].astype(bool), time=data["time"]),
    )
    return pd.Series(np.exp(est.coef_ / sd.to_numpy()), index=x.columns)


def _quartiles(risk: pd.Series) -> pd.Series:
    """The documented rule, written independently: right-closed intervals between numpy's
    quantiles, the first including the minimum."""
    edges = np.quantile(risk, [0.25, 0.5, 0.75])
    above = (risk.to_numpy()[:, None] > edges[None, :]).sum(axis=1)  # edges strictly below
    return pd.Series([f"Q{k + 1}" for k in above], index=risk.index)


def _term(r, model_id, term):
    t = r["survival_terms"]
    sel = t[(t.model_id == model_id) & (t.term == term)]
    assert len(sel) == 1, (model_id, term)
    return sel.iloc[0]


def _z(data):
    return (data["risk"] - data["risk"].mean()) / data["risk"].std(ddof=1)


def test_hr_per_sd_unadjusted_and_adjusted(real):
    name, r = real
    data = r["data"]
    expected = _sksurv_hr(pd.DataFrame({"z": _z(data)}), data)["z"]
    assert _term(r, "risk_per_sd__unadjusted", "risk_sd")["hr"] == pytest.approx(expected, abs=TOL)
    if data["sex"].nunique() > 1:
        x = pd.DataFrame(
            {
                "z": _z(data),
                "age": data["age"] / 10,
                "female": (data["sex"] == "female").astype(float),
            }
        )
        adjusted = _sksurv_hr(x, data)
        row = _term(r, "risk_per_sd__age_sex", "risk_sd")
        assert row["hr"] == pytest.approx(adjusted["z"], abs=TOL)
        assert _term(r, "risk_per_sd__age_sex", "sex[female]")["hr"] == pytest.approx(
            adjusted["female"], abs=TOL
        )
        assert row["hr"] > 1  # every one of these scores is a risk factor


def test_harrells_c(real):
    from lifelines.utils import concordance_index

    _, r = real
    data = r["data"]
    acc = r["accuracy"]
    row = acc[(acc.metric == "c_index") & (acc.attribute == "all")].iloc[0]
    assert row["value"] == pytest.approx(
        concordance_index(data["time"], -data["risk"], data["event"]), abs=TOL
    )
    # one C, one interval on the page: the Cox model of the score alone ranks subjects as the
    # score does, and its C's bootstrap draws the very resamples of the accuracy table
    m = r["survival_models"].set_index("model_id").loc["risk_per_sd__unadjusted"]
    assert m["concordance"] == pytest.approx(row["value"], abs=1e-12)
    assert (m["concordance_low"], m["concordance_high"]) == pytest.approx(
        (row["ci_low"], row["ci_high"]), abs=1e-12
    )


def test_c_intervals_say_when_they_are_linearised(real):
    """rossi's C resamples are linearised (linear_from = 400): every statistics stage says
    so, and the interval's width is that of the delete-one jackknife's standard error computed
    with lifelines (within 20%: 100 resamples); the other cohorts' are exact and say nothing."""
    from lifelines.utils import concordance_index
    from scipy.stats import norm

    name, r = real
    notes = r["run_stages"].set_index("stage")["note"].fillna("")
    linear = name == "rossi"
    for stage in ("accuracy", "fairness", "survival"):
        assert ("resamples linearised" in notes[stage]) == linear, stage
    if not linear:
        return
    data = r["data"]
    t, e, s = data["time"].to_numpy(), data["event"].to_numpy(), data["risk"].to_numpy(float)
    n = len(t)
    leave_out = np.array(
        [concordance_index(np.delete(t, i), -np.delete(s, i), np.delete(e, i)) for i in range(n)]
    )
    se = np.sqrt((n - 1) / n * np.sum((leave_out - leave_out.mean()) ** 2))
    acc = r["accuracy"]
    row = acc[(acc.metric == "c_index") & (acc.attribute == "all")].iloc[0]
    width = (row["ci_high"] - row["ci_low"]) / (2 * norm.ppf(0.975))
    assert width == pytest.approx(se, rel=0.2)


def test_quartile_hazard_ratios_logrank_and_kaplan_meier_medians(real):
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import multivariate_logrank_test

    _, r = real
    data = r["data"]
    q = _quartiles(data["risk"])
    present = sorted(set(q))
    dummies = pd.DataFrame({g: (q == g).astype(float) for g in present if g != "Q1"})
    expected = _sksurv_hr(dummies, data)
    for g in dummies.columns:
        assert _term(r, "risk_quartiles__unadjusted", f"risk[{g}]")["hr"] == pytest.approx(
            expected[g], rel=TOL
        )
    t = r["survival_tests"]
    lr = t[(t.test == "logrank") & (t.groups == ",".join(present))].iloc[0]
    ref = multivariate_logrank_test(data["time"], q, data["event"])
    assert lr["statistic"] == pytest.approx(ref.test_statistic, abs=TOL)
    m = r["survival_metrics"]
    med = m[(m.metric == "median_survival")].set_index("model_id")["value"]
    overall = KaplanMeierFitter().fit(data["time"], data["event"]).median_survival_time_
    if np.isfinite(overall):
        assert med["km_overall"] == pytest.approx(overall, abs=TOL)
    else:
        assert pd.isna(med["km_overall"])
    for g in present:
        mask = (q == g).to_numpy()
        km = KaplanMeierFitter().fit(data["time"][mask], data["event"][mask]).median_survival_time_
        got = med[f"km_risk_quartile:{g}"]
        assert (pd.isna(got) and not np.isfinite(km)) or got == pytest.approx(km, abs=TOL)


def test_observed_over_expected_deaths_by_sex(real):
    """Expected deaths from the Cox model of score, age per decade and sex (scikit-survival's
    coefficients, a Breslow cumulative hazard written here)."""
    _, r = real
    data = r["data"]
    x = pd.DataFrame(
        {
            "risk": data["risk"],
            "age": data["age"] / 10,
            "female": (data["sex"] == "female").astype(float),
        }
    )
    x = x.loc[:, x.nunique() > 1]
    beta = np.log(_sksurv_hr(x, data)[x.columns].to_numpy())
    lp = x.to_numpy(float) @ beta
    w = np.exp(lp - lp.max())
    t, e = data["time"].to_numpy(), data["event"].to_numpy()
    times = np.unique(t[e == 1])
    at_risk = np.array([w[t >= s].sum() for s in times])
    deaths = np.array([e[t == s].sum() for s in times])
    hazard = np.cumsum(deaths / at_risk)
    expected = hazard[np.searchsorted(times, t, side="right") - 1] * w
    expected[t < times[0]] = 0.0
    f = r["fairness"]
    oe = f[(f.metric == "calibration_oe") & (f.attribute == "sex")].set_index("group_name")
    for group in oe.index:
        mask = (data["sex"] == group).to_numpy()
        assert oe.loc[group, "value"] == pytest.approx(
            e[mask].sum() / expected[mask].sum(), abs=TOL
        )


def test_uno_c_and_auc(real):
    from sksurv.metrics import concordance_index_ipcw, cumulative_dynamic_auc
    from sksurv.util import Surv

    from audit.survival.metrics import usable_horizons

    _, r = real
    data = r["data"]
    t, e, s = data["time"].to_numpy(), data["event"].to_numpy(), data["risk"].to_numpy(float)
    hs = usable_horizons(t, e)
    m = r["survival_metrics"]
    m = m[m.model_id == "risk"]
    if not hs:
        assert m[m.metric == "uno_c"].empty
        return
    y = Surv.from_arrays(event=e.astype(bool), time=t)
    uno = concordance_index_ipcw(y, y, s, tau=max(hs))[0]
    assert m[m.metric == "uno_c"].iloc[0]["value"] == pytest.approx(uno, abs=TOL)
    auc, _ = cumulative_dynamic_auc(y, y, s, hs)
    got = m[m.metric == "auc"].set_index("horizon")["value"]
    for h, a in zip(hs, np.atleast_1d(auc)):
        assert got[h] == pytest.approx(a, abs=TOL)


def test_every_cox_model_converged_or_says_why(real):
    _, r = real
    models = r["survival_models"]
    assert set(models["status"]) <= {"ok", "not_converged"}
    assert models.loc[models.status == "not_converged", "note"].str.len().gt(0).all()
    v = r["verdicts"].set_index("check_name")
    q4 = v.loc["risk_q4_vs_q1_hr"]
    if pd.notna(q4["value"]):  # value is the HR, judged_value its lower bound
        assert q4["value"] > q4["judged_value"]
