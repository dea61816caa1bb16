"""A model that predicts a constant plus noise must never pass a check: every accuracy,
survival, robustness and fairness check fails or is inconclusive.

The model reads the photo only to make noise: FaceAge 58 + 2 sin(1000 m) and risk
0.1 sin(1000 m), with m the photo's mean pixel. Perturbations move its outputs by less than
the tolerance (they used to pass the robustness checks: a model that ignores the face barely
moves), its FaceAge barely tracks age (its age-adjusted errors used to make every group look
fair), and its risk ranks no one."""

from __future__ import annotations

import torch
import yaml
from conftest import cli_run

USEFUL_CATEGORIES = {"accuracy", "survival", "robustness", "fairness"}


class ConstantPlusNoise(torch.nn.Module):
    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        noise = torch.sin(1000.0 * m)
        return torch.stack([58.0 + 2.0 * noise, 0.1 * noise], dim=1)


def test_a_constant_plus_noise_model_passes_no_check(tmp_path, prefect_harness):
    import duckdb

    from audit.demo.world import write_cohort

    cohort = write_cohort(tmp_path / "cohort", n=160, seed=11, photos=True)
    torch.jit.script(ConstantPlusNoise()).save(str(tmp_path / "noise.pt"))
    spec = tmp_path / "noise.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "noise",
                "kind": "torchscript",
                "checkpoint": "noise.pt",
                "input_size": 112,
                "outputs": {"faceage": 0, "risk": 1},
            }
        )
    )
    config = tmp_path / "audit.toml"
    config.write_text(
        "[accuracy]\nn_boot = 100\n[fairness]\nn_boot = 100\n"
        "[survival]\nn_boot = 100\ndecision_horizons = [1.0]\n"
        "[robustness]\nsample_subjects = 80\nseverities = [1, 3]\n"
        'perturbations = ["brightness", "gaussian_blur", "jpeg", '
        '"rotation"]\n'
    )
    assert cli_run(cohort, str(spec), tmp_path / "out", config=config) == 1
    con = duckdb.connect(str(tmp_path / "out" / "audit.duckdb"), read_only=True)
    v = con.execute(
        "SELECT check_name, category, status, details FROM verdicts WHERE model = 'noise'"
    ).df()
    con.close()
    judged = v[v["category"].isin(USEFUL_CATEGORIES)]
    assert set(judged["category"]) == USEFUL_CATEGORIES
    passed = judged[judged["status"] == "pass"]
    assert passed.empty, passed.to_string()
    checks = v.set_index("check_name")
    assert checks.loc["robustness_faceage_reliability", "status"] == "fail"
    assert checks.loc["robustness_faceage", "status"] == "inconclusive"
    assert (
        "does not depend on the face" in checks.loc["robustness_faceage", "details"]
        or "reliability" in checks.loc["robustness_faceage", "details"]
    )
    assert checks.loc["fairness_faceage", "status"] == "inconclusive"
    assert checks.loc["fairness_risk", "status"] == "inconclusive"
