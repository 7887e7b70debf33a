"""`python -m train.export`: a directory that evaluation tools load whole (weights, tokenizer, and
the data's end-of-text id as bos/eos/pad), and a refusal for runs that did not complete."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import run_cli
from tests.reliability.helpers import ENV, MICRO


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("export") / "run"
    proc = run_cli("-m", "train", *MICRO, f"out_dir={run_dir}", env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


def _data_eos(run_dir) -> int:
    from omegaconf import OmegaConf

    from train.data import DataConfig, prepare_data
    return prepare_data(DataConfig.from_any(OmegaConf.load(run_dir / "config.yaml").data)).eos_id


def test_export_loads_whole_and_generation_stops_at_end_of_text(tmp_path, micro_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "hf"
    proc = run_cli("-m", "train.export", str(micro_run), "--out", str(out), env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    eos = _data_eos(micro_run)
    assert (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file()

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert tokenizer.eos_token_id == eos and tokenizer.pad_token_id == eos
    for config in (model.config, model.generation_config):
        assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (eos, eos, eos)
    assert tokenizer.decode(tokenizer("And God said").input_ids) == "And God said"

    # Generation: plain sampling runs; with end-of-text made certain (a large bias on that one
    # token) every sequence stops after it, one token in. Under a wrong eos id (Llama's default 2)
    # generation would go on emitting it to max_new_tokens.
    torch.manual_seed(0)
    prompt = tokenizer(["And God said"], return_tensors="pt")
    sampled = model.generate(**prompt, do_sample=True, max_new_tokens=12, num_return_sequences=2)
    assert sampled.shape[1] > prompt.input_ids.shape[1]
    forced = model.generate(**prompt, do_sample=False, max_new_tokens=30, sequence_bias={(eos,): 100.0})
    assert forced[0, prompt.input_ids.shape[1]:].tolist() == [eos]


def test_an_incomplete_run_is_refused_unless_asked(tmp_path, micro_run):
    run_dir = shutil.copytree(micro_run, tmp_path / "interrupted")
    (run_dir / "result.json").unlink()  # as a preempted run leaves it: checkpoints, no result
    proc = run_cli("-m", "train.export", str(run_dir), "--out", str(tmp_path / "hf"), env=ENV)
    assert proc.returncode == 2 and proc.stderr.startswith("error: run_dir: ") and "--allow-incomplete" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "hf").exists()
    forced = run_cli("-m", "train.export", str(run_dir), "--out", str(tmp_path / "hf"), "--allow-incomplete", env=ENV)
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["eos_token_id"] == _data_eos(micro_run)


def test_export_out_that_is_a_file_is_one_line(tmp_path, micro_run):
    target = tmp_path / "model.bin"
    target.write_text("not a folder")
    proc = run_cli("-m", "train.export", str(micro_run), "--out", str(target), env=ENV)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip() == f"error: --out: {target} is a file, not a folder; choose a folder (it is created if missing)"
    assert target.read_text() == "not a folder"
