"""Bits per byte: the byte count of every token is exact on real text, and a run's bpb is its
validation loss over the bytes of the same evaluated tokens, in metrics, result.json and results.csv."""
import csv
import json
import math

import numpy as np
import pytest

from tests.conftest import run_cli
from tests.reliability.helpers import MICRO, env

TEXT = "In the beginning God created the heaven and the earth.\nCafé – naïve ünïcode, 日本語, emoji 🙂.\n"


@pytest.mark.parametrize("kw", [dict(vocab_size=512), dict(name="embedded_gpt2", tokenizer="gpt2", vocab_size=50257)],
                         ids=["bpe", "gpt2"])
def test_token_bytes_add_up_to_the_texts_utf8_bytes(kw):
    from train.data import DataConfig, prepare_data
    prepared = prepare_data(DataConfig(**kw))
    token_bytes = prepared.token_bytes(prepared.vocab_size + 64)  # padded like the model's vocabulary
    tok = prepared.tokenizer()
    assert token_bytes[prepared.eos_id] == 0 and token_bytes[prepared.vocab_size:].sum() == 0
    ids = tok.encode(TEXT).ids
    assert token_bytes[ids].sum() == len(TEXT.encode("utf-8"))
    # on the real validation split too: the tokens' bytes are the decoded text's
    val = np.fromfile(prepared.val_path, dtype=prepared.dtype)[:50_000]
    assert token_bytes[val].sum() == len(tok.decode(val.tolist()).encode("utf-8"))


def test_a_runs_bpb_is_its_loss_over_the_evaluated_bytes(tmp_path):
    from train.data import DataConfig, prepare_data
    from train.run.results_table import read_results_csv, write_results_csv

    run_dir = tmp_path / "sweep" / "runs" / "micro"
    proc = run_cli("-m", "train", *MICRO, f"out_dir={run_dir}", env=env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((run_dir / "result.json").read_text())
    # the micro run evaluates the first eval_tokens // seq_len windows of val.bin
    prepared = prepare_data(DataConfig(vocab_size=512))
    seq_len, n_seqs = 64, 2048 // 64
    val = np.fromfile(prepared.val_path, dtype=prepared.dtype)[: n_seqs * seq_len + 1]
    targets = np.concatenate([val[i * seq_len + 1:(i + 1) * seq_len + 1] for i in range(n_seqs)])
    n_bytes = prepared.token_bytes()[targets].sum()
    expected = result["final_val_loss"] * len(targets) / (math.log(2) * n_bytes)
    assert result["final_val_bpb"] == pytest.approx(expected, rel=1e-9)
    assert 0.5 < result["final_val_bpb"] < result["final_val_loss"] / math.log(2)  # tokens hold >1 byte
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "val_loss" in r]
    assert evals and all(r["val_bpb"] > 0 for r in evals)
    assert evals[-1]["val_bpb"] == result["final_val_bpb"]
    write_results_csv(tmp_path / "sweep")
    (row,) = read_results_csv(tmp_path / "sweep" / "results.csv")
    assert row["bpb"] == pytest.approx(result["final_val_bpb"])
    with open(tmp_path / "sweep" / "results.csv", newline="") as handle:
        assert "bpb" in next(csv.reader(handle))
