"""The run directory contract: config.yaml, metrics.jsonl (append-only), result.json (atomic, at
the end), env.json and checkpoints/. Writes here are atomic: temp file, fsync, rename."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

RESULT_STATUSES = ("completed", "diverged", "failed")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def atomic_write_json(path: Path, obj: dict) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_result(run_dir: Path) -> dict | None:
    """The run's result.json, or None when absent or unreadable (an unreadable one means unfinished)."""
    path = Path(run_dir) / "result.json"
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        warnings.warn(f"{path}: does not parse; treating the run as not finished")
        return None
    return result if isinstance(result, dict) and result.get("status") in RESULT_STATUSES else None


class MetricsLog:
    """metrics.jsonl: one JSON object per line, appended and flushed as the run goes."""

    def __init__(self, path: Path):
        self.path = path

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        rows = []
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                warnings.warn(f"{self.path}:{number}: truncated or corrupt line skipped")
        return rows

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows past the checkpoint so the log has each step exactly once."""
        kept = [row for row in self.rows() if row.get("step", -1) <= step]
        atomic_write_bytes(self.path, "".join(json.dumps(row) + "\n" for row in kept).encode())

    def append(self, row: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def environment(device_name: str) -> dict:
    """Code version and environment, logged with every run (as modded-nanogpt does)."""
    import torch
    env = {"git_sha": git_sha(), "python": sys.version.split()[0], "torch": torch.__version__,
           "platform": platform.platform(), "device": device_name, "cuda": torch.version.cuda,
           "hostname": platform.node()}
    if device_name != "cpu":
        try:
            env["nvidia_smi"] = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            env["nvidia_smi"] = None
    return env
