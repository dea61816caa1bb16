"""What the data can break is a noted result, never exit 3: a score that separates deaths
from survivors (every high-score subject dies, no low-score one does) has an infinite hazard
ratio. Every Cox model of it is a `not_converged` row naming the term, the cross-fitted
metrics say why they are missing, and the verdict's hazard-ratio check is inconclusive (it
was `skipped` as "not fitted", so the run passed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import cli_run


def test_a_separating_score_is_a_noted_result(tmp_path, prefect_harness):
    import duckdb

    rng = np.random.default_rng(3)
    n = 80
    risk = np.r_[np.ones(40), np.zeros(40)]
    folder = tmp_path / "sep"
    folder.mkdir()
    pd.DataFrame(
        {
            "photo_id": [f"p{i}" for i in range(n)],
            "age": rng.uniform(40, 80, n).round(1),
            "sex": rng.choice(["female", "male"], n),
            "time": np.where(risk == 1, rng.uniform(0.1, 1.0, n), rng.uniform(2, 4, n)).round(3),
            "event": (risk == 1).astype(int),
            "risk": risk,
        }
    ).to_csv(folder / "manifest.csv", index=False)
    (folder / "cohort.yaml").write_text("name: separating\ntime_unit: years\n")
    out = tmp_path / "out"
    assert cli_run(folder, "predictions:risk", out, config=_config(tmp_path)) == 1
    con = duckdb.connect(str(out / "audit.duckdb"), read_only=True)
    models = con.execute("SELECT model_id, status, note FROM survival_models").df()
    verdicts = con.execute("SELECT check_name, status, details FROM verdicts").df()
    notes = " ".join(con.execute("SELECT note FROM run_stages WHERE note IS NOT NULL").df()["note"])
    con.close()
    risk_models = models[models.model_id.str.startswith("risk_")].set_index("model_id")
    assert (risk_models.status == "not_converged").all()
    assert "monotone likelihood" in risk_models.loc["risk_per_sd__age_sex", "note"]
    assert "risk_sd" in risk_models.loc["risk_per_sd__age_sex", "note"]
    assert models.set_index("model_id").loc["age_per_decade__unadjusted", "status"] == "ok"
    q4 = verdicts.set_index("check_name").loc["risk_q4_vs_q1_hr"]
    assert q4["status"] == "inconclusive" and "not converged" in q4["details"]
    assert "Uno's C and the AUC need no model and are kept" in notes


def _config(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[accuracy]\nn_boot = 50\n[survival]\nn_boot = 50\n[fairness]\nn_boot = 50\n")
    return path
