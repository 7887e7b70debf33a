"""WandbLogger writes a real offline wandb run, and train.tracking.wandb_offline reads it back exactly.

No server: wandb runs offline (its wandb-core service writes run-*.wandb), and the file is parsed
by our own reader. The parser is also checked on synthetic files for the format's edge cases
(records spanning 32 KiB blocks, block padding, corruption, a truncated tail).
"""

from __future__ import annotations

import json
import math
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import pytest

from tests.conftest import run_cli
from train.tracking.wandb_log import WandbLogger, resolve_mode, scrub_config
from train.tracking.wandb_offline import (
    BLOCK,
    find_wandb_file,
    iter_record_bytes,
    read_offline_config,
    read_offline_history,
    read_offline_metric_definitions,
    read_offline_summary,
)

REPO = Path(__file__).resolve().parents[2]
BOGUS_KEY = "bogus" + "0123456789abcdef" * 3  # 53 chars: a well-formed but fake API key

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No credentials, no WANDB_MODE from the outside, wandb's config dir in tmp."""
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL",
                "WANDB_DIR"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))
    # an in-process run exports WANDB_SERVICE (its wandb-core's address); a child process that inherits
    # it logs through that service and exits without waiting for its own flush. Recorded here, the
    # variable is unset again after each test, whichever test's run set it.
    monkeypatch.setenv("WANDB_SERVICE", "")
    monkeypatch.delenv("WANDB_SERVICE")


def _synthetic_history(n: int = 40):
    """A loss curve like a real run's: tokens, FLOPs (6·N·D), train loss, val loss every 10."""
    n_params, batch_tokens = 3_000_000, 8192
    rows = []
    for step in range(1, n + 1):
        tokens = step * batch_tokens
        row = {
            "tokens": tokens,
            "flops": 6.0 * n_params * tokens,
            "train/loss": 1.7 + 9.3 * math.exp(-step / 11.0) + 0.01 * math.sin(step),
            "train/lr": 3e-4 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / n))),
        }
        if step % 10 == 0:
            row["val/loss"] = row["train/loss"] + 0.05
        rows.append(row)
    return rows


def test_offline_run_reads_back_exactly(clean_env, tmp_path):
    run_dir = tmp_path / "run"
    history = _synthetic_history()
    big = "x" * 100_000  # a record over three 32 KiB blocks: FIRST/MIDDLE/LAST chunks
    config = {"model": {"params": 3e6}, "optim": {"lr": 3e-4}, "seed": 7}
    with WandbLogger("offline", "isoflop-test", "sweep/C=1e15", "run-a", config, str(run_dir),
                     tags=["test"], job_type="isoflop-run") as wb:  # fmt: skip
        assert wb.mode == "offline" and wb.enabled
        for row in history:
            wb.log(row)
        wb.log({"tokens": history[-1]["tokens"], "note": big})
    assert not wb.enabled

    wandb_file = find_wandb_file(run_dir)
    assert wandb_file.name.startswith("run-") and wandb_file.parent.parent == run_dir / "wandb"
    rows = read_offline_history(run_dir)
    assert len(rows) == len(history) + 1
    for got, want in zip(rows, history):
        user = {k: v for k, v in got.items() if not k.startswith("_")}
        assert user == want  # exact floats: JSON keeps every bit of a float64
    assert [r["_step"] for r in rows] == list(range(len(rows)))
    assert rows[-1]["note"] == big

    defs = read_offline_metric_definitions(wandb_file)
    assert defs["train/*"]["step_metric"] == "tokens" and defs["train/*"]["glob"]
    assert defs["val/*"]["step_metric"] == "tokens"
    assert "tokens" in defs and "flops" in defs
    cfg = read_offline_config(wandb_file)
    assert cfg["model"] == {"params": 3e6} and cfg["seed"] == 7


def test_api_key_never_written(clean_env, tmp_path):
    # A fresh process, so that wandb-core starts here and its own debug log lands in tmp_path.
    run_dir = tmp_path / "run"
    code = (
        "from train.tracking.wandb_log import WandbLogger\n"
        f"key = {BOGUS_KEY!r}\n"
        "config = {'wandb': {'api_key': key}, 'note': 'key=' + key, 'lr': 1e-3}\n"
        f"with WandbLogger('offline', 'isoflop-test', None, 'run-b', config, {str(run_dir)!r}) as wb:\n"
        "    assert wb.mode == 'offline'\n"
        "    wb.log({'tokens': 1, 'flops': 6e6, 'train/loss': 2.5})\n"
    )
    env = dict(os.environ, WANDB_API_KEY=BOGUS_KEY)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=90)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert BOGUS_KEY not in out.stdout + out.stderr
    # everything wandb wrote: the run dir, and its cache dir (wandb-core's debug log)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files)
    assert any("core-debug" in p.name for p in files), files
    leaks = [str(p) for p in files if BOGUS_KEY.encode() in p.read_bytes()]
    assert not leaks, f"API key written to {leaks}"
    cfg = read_offline_config(run_dir)
    assert cfg["wandb"] == {"api_key": "***"} and cfg["note"] == "key=***" and cfg["lr"] == 1e-3


def test_disabled_writes_nothing_and_never_imports_wandb(tmp_path):
    code = (
        "import sys\n"
        "from train.tracking.wandb_log import WandbLogger\n"
        f"with WandbLogger('disabled', 'p', 'g', 'n', {{'a': 1}}, {str(tmp_path / 'run')!r}) as wb:\n"
        "    wb.log({'tokens': 1, 'train/loss': 1.0}); wb.summary({'x': 1})\n"
        "assert wb.mode == 'disabled' and wb.run is None and not wb.enabled\n"
        "assert 'wandb' not in sys.modules, 'disabled mode imported wandb'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").rglob("*"))


def test_auto_mode_never_prompts(clean_env, monkeypatch, tmp_path):
    assert resolve_mode("auto") == "offline"  # no credentials anywhere
    with pytest.warns(RuntimeWarning, match="no API key"):
        assert resolve_mode("online") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", BOGUS_KEY)
    assert resolve_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_mode("auto") == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY")
    netrc_file = tmp_path / "netrc"
    netrc_file.write_text(f"machine api.wandb.ai\n  login user\n  password {BOGUS_KEY}\n")
    netrc_file.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc_file))
    assert resolve_mode("auto") == "online"
    with pytest.raises(ValueError):
        resolve_mode("dryrun-typo")


def test_init_failure_is_only_a_warning(clean_env, monkeypatch, tmp_path):
    import wandb

    def boom(*a, **k):
        raise RuntimeError("service exploded")

    monkeypatch.setattr(wandb, "init", boom)
    with pytest.warns(RuntimeWarning, match="service exploded"):
        wb = WandbLogger("offline", "p", None, "n", {}, str(tmp_path / "run"))
    assert wb.mode == "disabled" and not wb.enabled
    wb.log({"tokens": 1, "train/loss": 1.0})  # no-ops, no exceptions
    wb.finish()


def test_scrub_config_masks_secrets_but_not_tokens():
    cfg = {"tokens": 10, "batch_tokens": 5, "wandb": {"API_KEY": "k", "password": "p"},
           "list": [{"secret": 1}], "s": "abcKEYdef"}  # fmt: skip
    assert scrub_config(cfg, secret="KEY") == {
        "tokens": 10, "batch_tokens": 5, "wandb": {"API_KEY": "***", "password": "***"},
        "list": [{"secret": "***"}], "s": "abc***def",
    }  # fmt: skip


# ---- the parser on synthetic files ----------------------------------------------------------


def _write_log(payloads: list[bytes], version: int = 0) -> bytes:
    """A minimal writer of the same format (leveldb log with the W&B header), for tests."""
    out = bytearray(b":W&B" + struct.pack("<HB", 0xBEE1, version))
    for payload in payloads:
        first, rest = True, payload
        while True:
            left = BLOCK - len(out) % BLOCK
            if left < 7:
                out += b"\0" * left
                left = BLOCK
            take = min(len(rest), left - 7)
            chunk, rest = rest[:take], rest[take:]
            kind = (1 if not rest else 2) if first else (4 if not rest else 3)
            out += struct.pack("<IHB", zlib.crc32(bytes([kind]) + chunk), len(chunk), kind)
            out += chunk
            first = False
            if not rest:
                break
    return bytes(out)


def test_parser_block_boundaries_and_big_records():
    payloads = [os.urandom(n) for n in (10, 32_000, 40, 32_754, 7, 100_000, 3, 0, 65_536, 5)]
    assert list(iter_record_bytes(_write_log(payloads))) == payloads
    assert list(iter_record_bytes(_write_log(payloads, version=1))) == payloads


def test_parser_recovers_from_corruption_and_truncation():
    payloads = [bytes([i]) * 20_000 for i in range(1, 7)]
    data = bytearray(_write_log(payloads))
    data[7 + 7 + 5] ^= 0xFF  # corrupt the first record's payload (block 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = list(iter_record_bytes(bytes(data)))
    assert any("corrupt" in str(w.message) for w in caught)
    # block 0 is skipped (record 1 and the start of record 2); reading resumes at block 1,
    # whose leading MIDDLE/LAST chunks of record 2 are dropped
    assert got == payloads[2:]
    # a truncated tail (the writer was killed mid-record) ends the read quietly
    assert list(iter_record_bytes(_write_log(payloads)[:-100])) == payloads[:-1]
    with pytest.raises(ValueError, match="not a .wandb file"):
        list(iter_record_bytes(b"PK\x03\x04 not wandb"))


def test_a_real_training_run_logs_its_loss_history_offline(clean_env, tmp_path):
    """`python -m train wandb.mode=offline`: the run's own .wandb file holds every step's train
    loss and every validation loss, against tokens and FLOPs, equal to metrics.jsonl."""
    run_dir = tmp_path / "run"  # clean_env has removed WANDB_MODE from the environment run_cli passes on
    proc = run_cli("-m", "train", "model.params=2e4", "budget.flops=5e9", "model.seq_len=64",
                   "model.tie_embeddings=true", "data.vocab_size=512", "optim.batch_tokens=1024", "eval_tokens=2048",
                   "eval_every=10", "eval_fraction=1", "wandb.mode=offline", f"out_dir={run_dir}", env={"OMP_NUM_THREADS": "1"},
                   timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    history = [row for row in read_offline_history(run_dir) if "train/loss" in row]
    assert len(history) == len(metrics) >= 20
    for logged, row in zip(history, metrics):
        assert (logged["step"], logged["tokens"], logged["flops"]) == (row["step"], row["tokens"], row["flops"])
        assert logged["train/loss"] == row["train_loss"]  # exact: JSON keeps every bit of a float64
        assert logged.get("val/loss") == row.get("val_loss")
        assert logged.get("val/bpb") == row.get("val_bpb")
    assert sum("val/loss" in r for r in history) >= 3
    result = json.loads((run_dir / "result.json").read_text())
    summary = read_offline_summary(run_dir)
    assert summary["final_val_loss"] == result["final_val_loss"] and summary["final_val_bpb"] == result["final_val_bpb"]
    assert summary["status"] == "completed" and summary["tokens"] == result["tokens"]
    defs = read_offline_metric_definitions(run_dir)
    assert defs["train/*"]["step_metric"] == "tokens"
