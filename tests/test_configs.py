"""Every shipped config loads: each sweep preset plans, each catalog model plans (litgpt's habit)."""
import json

import pytest

from tests.conftest import REPO, run_cli
from train.plan.shapes import CATALOG

SWEEP_PRESETS = sorted(p.stem for p in (REPO / "configs" / "sweep").glob("*.yaml") if p.stem != "none")
DATA_PRESETS = sorted(p.stem for p in (REPO / "configs" / "data").glob("*.yaml"))
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


@pytest.mark.parametrize("preset", SWEEP_PRESETS)
def test_sweep_preset_plans(preset, tmp_path):
    proc = run_cli("-m", "sweeps", f"sweep={preset}", f"sweep.out_dir={tmp_path}/s", "dry_run=true", env=OFFLINE)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "estimated training time" in proc.stdout
    assert not (tmp_path / "s" / "runs").exists()


def test_all_catalog_models_plan():
    for name in CATALOG:
        proc = run_cli("-m", "train", f"model={name}", "data=embedded_gpt2", "budget.flops=1e19", "dry_run=true")
        assert proc.returncode == 0, proc.stderr
        plan = json.loads(proc.stdout.strip().splitlines()[-1])
        assert plan["shape"]["seq_len"] == 2048 and plan["shape"]["vocab_size"] == 50304


@pytest.mark.parametrize("preset", DATA_PRESETS)
def test_data_preset_loads(preset):
    proc = run_cli("-m", "train", f"data={preset}", "model.params=3e7", "budget.flops=1e17", "dry_run=true")
    assert proc.returncode == 0, proc.stderr
