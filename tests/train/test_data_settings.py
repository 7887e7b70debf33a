"""The data settings added after runs and sweeps were first recorded (data.hf_revision,
data.tokenizer_name, data.tokenizer_revision): set, they are part of a run's id, a sweep's identity
and a fit's setup; unset, they leave all three as they were recorded before them."""
from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import REPO
from train.config import register_configs
from train.data.config import UNSET_NOT_IN_IDENTITY, identity_items

TINY = ["model.params=1e6", "budget.flops=3e11", "model.seq_len=128", "wandb.mode=disabled"]
HF = ["data.source=hf", "data.hf_name=org/corpus"]


def config(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose("train", overrides=[*TINY, *overrides])


def test_identity_items_drop_only_the_new_fields_left_unset():
    data = {"source": "hf", "hf_name": "x", "hf_subset": None, "hf_revision": None, "tokenizer_name": None,
            "tokenizer_revision": "v1"}
    assert identity_items(data) == {"source": "hf", "hf_name": "x", "hf_subset": None, "tokenizer_revision": "v1"}
    assert set(UNSET_NOT_IN_IDENTITY) == {"hf_revision", "tokenizer_name", "tokenizer_revision"}


def test_run_id_counts_a_revision_only_when_set():
    from train.plan import make_plan
    unpinned = make_plan(config(*HF)).run_id
    assert make_plan(config(*HF, "data.hf_revision=null")).run_id == unpinned
    v1, v2 = (make_plan(config(*HF, f"data.hf_revision={rev}")).run_id for rev in ("v1", "v2"))
    assert len({unpinned, v1, v2}) == 3


def test_a_sweep_recorded_before_the_new_fields_keeps_its_identity(tmp_path):
    import json

    from sweeps.identity import IDENTITY_FILE, SweepDirError, check_identity, config_identity
    identity = config_identity(config())
    assert not any(k in identity for k in ("data.hf_revision", "data.tokenizer_name", "data.tokenizer_revision"))
    (tmp_path / IDENTITY_FILE).write_text(json.dumps({"identity": identity}))
    check_identity(tmp_path, config_identity(config()))  # the same config: accepted
    pinned = config_identity(config(*HF, "data.hf_revision=v1"))
    assert pinned["data.hf_revision"] == "v1"
    (tmp_path / IDENTITY_FILE).write_text(json.dumps({"identity": config_identity(config(*HF))}))
    with pytest.raises(SweepDirError, match=r'data\.hf_revision \(absent\) -> "v1"'):
        check_identity(tmp_path, pinned)


def test_fit_setup_of_runs_recorded_before_and_after_the_new_fields_is_one(tmp_path):
    import yaml

    from analysis.setup import common_setup, read_setup
    old, new = tmp_path / "old", tmp_path / "new"
    for run, extra in ((old, {}), (new, {"hf_revision": None, "tokenizer_name": None, "tokenizer_revision": None})):
        run.mkdir()
        (run / "config.yaml").write_text(yaml.safe_dump({"seed": 0, "data": {"name": "embedded", **extra}}))
    setup, _ = common_setup({str(old): read_setup(str(old)), str(new): read_setup(str(new))})
    assert setup == {"seed": 0, "data.name": "embedded"}
