"""A corrupt state on disk: a truncated or garbage checkpoint, a torn metrics.jsonl line, a
result.json that does not parse, and a full disk (an injected ENOSPC, and a real tmpfs that
fills up). Each is survived with a warning, or stops with one clear error and records nothing as
finished; re-running the same command then ends equal to the uninterrupted run, bit for bit.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from train.run.results_table import run_state
from tests.reliability.helpers import STEPS, copy_run, result, same_result, train


def _unfinished_copy(reference, dst, keep=("step-00000035.pt", "step-00000042.pt")):
    """The reference run as it was before its result was written (or earlier: fewer checkpoints)."""
    run_dir = copy_run(reference, dst)
    (run_dir / "result.json").unlink()
    for ckpt in (run_dir / "checkpoints").glob("step-*.pt"):
        if ckpt.name not in keep:
            ckpt.unlink()
    return run_dir


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, reference, damage):
    run_dir = _unfinished_copy(reference, tmp_path / "run")
    newest = run_dir / "checkpoints" / "step-00000042.pt"
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data)))
    proc = train(f"out_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "warning: checkpoint" in proc.stderr and "step-00000042.pt does not load" in proc.stderr
    assert "falling back to the previous one" in proc.stderr
    assert f"resuming from step 35/{STEPS}" in proc.stdout
    same_result(run_dir, reference)


def test_torn_metrics_line_is_skipped_and_unparsable_result_counts_as_unfinished(tmp_path, reference):
    run_dir = _unfinished_copy(reference, tmp_path / "run", keep=("step-00000035.pt",))
    lines = (run_dir / "metrics.jsonl").read_text().splitlines(keepends=True)
    # a crash while appending row 38: its line cut in the middle, nothing after it
    (run_dir / "metrics.jsonl").write_text("".join(lines[:37]) + lines[37][: len(lines[37]) // 2])
    # and a result.json cut short, as a non-atomic writer would leave it
    (run_dir / "result.json").write_text(reference.joinpath("result.json").read_text()[:40])
    assert run_state(run_dir) == "partial", "an unparsable result.json is not a finished run"
    proc = train(f"out_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "result.json: does not parse; treating the run as not finished" in proc.stderr
    assert "metrics.jsonl:38: truncated or corrupt line skipped" in proc.stderr
    assert f"resuming from step 35/{STEPS}" in proc.stdout
    same_result(run_dir, reference)


@pytest.mark.parametrize("point,resumes_from", [("ckpt-write:2", 7), ("result-write", STEPS)])
def test_disk_full_injected_is_one_error_and_rerun_resumes(tmp_path, reference, point, resumes_from):
    run_dir = tmp_path / "run"
    proc = train(f"out_dir={run_dir}", fault=f"{point}:enospc")
    assert proc.returncode == 74, proc.stderr[-3000:]
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and errors[0].startswith("error: disk full: ") and "No space left" in errors[0], errors
    assert "Traceback" not in proc.stderr
    assert not (run_dir / "result.json").exists(), "nothing is recorded as finished"
    assert not list(run_dir.rglob("*.tmp")), "the failed write removed its temp file"
    again = train(f"out_dir={run_dir}")  # "space is freed": the same command, without the fault
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming from step {resumes_from}/{STEPS}" in again.stdout
    same_result(run_dir, reference)


def _mount_tmpfs(where, size: str) -> bool:
    where.mkdir()
    if shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_disk_full_on_a_real_tmpfs(tmp_path, reference):
    disk = tmp_path / "disk"
    # the run's small files (~10 KB) and its first checkpoint fit, the second checkpoint does not
    checkpoint = (reference / "checkpoints" / "step-00000042.pt").stat().st_size
    if not _mount_tmpfs(disk, f"{(checkpoint * 16 // 10) // 1024 + 64}k"):
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        run_dir = disk / "run"
        proc = train(f"out_dir={run_dir}")
        assert proc.returncode == 74, proc.stdout[-2000:] + proc.stderr[-3000:]
        errors = _error_lines(proc.stderr)
        assert len(errors) == 1 and errors[0].startswith("error: disk full: "), proc.stderr[-3000:]
        assert not (run_dir / "result.json").exists()
        stopped_after = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*.pt"))
        assert stopped_after == ["step-00000007.pt"], stopped_after
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)  # space is freed
        again = train(f"out_dir={run_dir}")
        assert again.returncode == 0, again.stderr[-3000:]
        assert f"resuming from step 7/{STEPS}" in again.stdout
        same_result(run_dir, reference)
        assert result(run_dir)["status"] == "completed"
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_full_disk_hidden_behind_a_writers_runtime_error_is_reported_as_disk_full(tmp_path):
    """torch.save, out of space mid-write, fails again while closing its archive with a
    RuntimeError: the atomic write raises the OSError underneath, so the run exits 74 (disk
    full, resumable), and leaves no temp file."""
    import errno

    from train.run.rundir import atomic_write_stream

    def write(handle):
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        finally:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")

    target = tmp_path / "step-00000007.pt"
    with pytest.raises(OSError) as caught:
        atomic_write_stream(target, write)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []
