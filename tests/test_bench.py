"""scripts/bench.py runs end to end on one tiny size and prints what it promises.

Format only: speed claims come from the benchmark itself (docs/performance.md), never from tests.
"""
import json

from tests.conftest import run_cli

ROW_KEYS = {"size", "params", "shape", "seq_len", "batch", "ours_tokens_per_s", "hf_tokens_per_s", "ratio",
            "first_step_s", "device", "dtype", "compile", "steps", "repeats", "threads", "loadavg"}
SUMMARY_KEYS = {"ours_tokens_per_s", "hf_tokens_per_s", "ratio", "ratio_min", "device", "sizes",
                "device_name", "dtype", "torch", "threads", "wall_s"}


def test_bench_one_tiny_size_prints_table_rows_and_summary(tmp_path):
    json_path = tmp_path / "bench.jsonl"
    result = run_cli("scripts/bench.py", "--sizes", "3e4", "--seq-len", "32", "--batch", "4", "--vocab", "512",
                     "--tied", "--steps", "1", "--repeats", "1", "--warmup", "0", "--device", "cpu",
                     "--threads", "1", "--json", str(json_path), timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("device ") and "threads" in lines[0]
    assert lines[1].split()[:4] == ["size", "params", "shape", "ours"]
    assert lines[2].split()[0] == "3e4"  # the table row
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert len(records) == 2 and lines[-1].startswith("{")  # one row per size, then the summary, last
    row, summary = records
    assert ROW_KEYS <= set(row)
    assert (row["size"], row["seq_len"], row["batch"], row["threads"]) == ("3e4", 32, 4, 1)
    assert row["device"] == "cpu" and row["dtype"] == "float32" and row["compile"] is False
    for key in ("ours_tokens_per_s", "hf_tokens_per_s", "ratio", "first_step_s"):
        assert row[key] > 0
    assert row["ratio"] == row["ours_tokens_per_s"] / row["hf_tokens_per_s"]
    assert SUMMARY_KEYS <= set(summary)
    assert summary["sizes"] == ["3e4"] and summary["device"] == "cpu"
    assert abs(summary["ratio"] - row["ratio"]) < 1e-9 and summary["ratio_min"] == row["ratio"]
    assert summary["ours_tokens_per_s"] == row["ours_tokens_per_s"]
    # --json: the same row, then the summary marked as such
    written = [json.loads(line) for line in json_path.read_text().splitlines()]
    assert written == [row, summary | {"summary": True}]


def test_bench_without_baseline_has_no_ratio():
    result = run_cli("scripts/bench.py", "--sizes", "3e4", "--seq-len", "32", "--batch", "2", "--vocab", "512", "--tied", "--steps", "1",
                     "--repeats", "1", "--warmup", "0", "--device", "cpu", "--threads", "1", "--no-hf", timeout=120)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert "ratio" not in summary and "hf_tokens_per_s" not in summary and summary["ours_tokens_per_s"] > 0


def test_bench_rejects_zero_repeats():
    result = run_cli("scripts/bench.py", "--quick", "--repeats", "0", timeout=60)
    assert result.returncode == 2 and "--repeats" in result.stderr
