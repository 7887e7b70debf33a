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
    # every run's tokens were compared with the corpus (declared or prepared), offline; none repeats
    warnings = proc.stderr  # the plan's warnings are on stderr (train/logs.py)
    assert "not checked" not in warnings and "data repeats" not in warnings, warnings[-3000:]


@pytest.mark.parametrize("preset", ["gpu_day", "chinchilla_a2"])
def test_gpu_presets_refuse_repeated_data_and_declare_their_sample(preset):
    from hydra import compose, initialize_config_dir

    from train.config import register_configs
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"sweep={preset}"])
    assert cfg.data.repeat_policy == "refuse" and cfg.data.unique_tokens >= 9e9
    assert cfg.precision == "bf16"


@pytest.mark.parametrize("overrides", [["data=embedded"], ["data=embedded_gpt2"], ["sweep=demo"]])
def test_declared_unique_tokens_are_the_prepared_counts(overrides, demo_corpus):
    """The local corpora's declared sizes are exact; the Hub ones are lower bounds (their files say why)."""
    from hydra import compose, initialize_config_dir

    from train.config import register_configs
    from train.data import prepare_data
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    assert prepare_data(cfg.data).n_train_tokens == cfg.data.unique_tokens


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
