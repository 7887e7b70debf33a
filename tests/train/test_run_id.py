"""The run id: the hash of everything that changes a run's result (docs/training.md, "The run id")."""
import json

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import REPO, run_cli
from train.config import register_configs
from train.plan import make_plan
from train.plan.run_plan import resolve_precision

TINY = ["model.params=1e6", "budget.flops=3e11", "model.seq_len=128", "wandb.mode=disabled"]


def plan_for(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return make_plan(compose("train", overrides=[*TINY, *overrides]))


def test_bf16_and_fp32_runs_of_one_config_get_different_ids():
    bf16, fp32 = plan_for("precision=bf16"), plan_for("precision=fp32")
    assert bf16.run_id != fp32.run_id
    assert (bf16.precision, fp32.precision) == ("bf16", "fp32")
    assert bf16.budget == fp32.budget and bf16.shape == fp32.shape  # only the precision differs


def test_auto_precision_resolves_per_device():
    """precision=auto trains in fp32 on the CPU and bf16 on CUDA: it shares the id of the
    precision it resolves to."""
    assert plan_for("precision=auto", "device=cpu").run_id == plan_for("precision=fp32").run_id
    assert plan_for("precision=auto", "device=cuda").run_id == plan_for("precision=bf16").run_id
    assert resolve_precision("auto", "cuda:1") == "bf16" and resolve_precision("auto", "mps") == "fp32"


def test_what_does_not_change_the_result_keeps_the_id():
    base = plan_for().run_id
    for override in ("optim.micro_batch_seqs=1", "compile=true", "model.attention=sdpa", "eval_every=3",
                     "log_every=2", "checkpoint_minutes=1", "wandb.mode=offline", "cpu_threads=2"):
        assert plan_for(override).run_id == base, override
    for override in ("seed=1", "optim.lr=1e-3", "model.seq_len=64", "optim.weight_decay=0"):
        assert plan_for(override).run_id != base, override


def test_unknown_precision_is_refused_by_the_dry_run():
    proc = run_cli("-m", "train", *TINY, "precision=fp8", "dry_run=true")
    assert proc.returncode == 2 and proc.stderr.startswith("error: precision: unknown value 'fp8'"), proc.stderr


def test_dry_run_shows_the_precision_and_id_of_the_real_run():
    proc = run_cli("-m", "train", *TINY, "precision=bf16", "device=cpu", "dry_run=true")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["precision"] == "bf16" and plan["run_id"] == plan_for("precision=bf16").run_id


@pytest.mark.parametrize("precision", ["fp8", "BF16"])
def test_resolve_precision_names_the_field(precision):
    with pytest.raises(ValueError, match="^precision: unknown value"):
        resolve_precision(precision, "cpu")
