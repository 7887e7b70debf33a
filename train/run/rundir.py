"""The run directory contract: config.yaml, metrics.jsonl (append-only), result.json (atomic, at
the end), env.json and checkpoints/. Writes here are atomic: temp file, fsync, rename. A run
directory is locked (`.lock`) by the process that trains it, for as long as it lives."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train.run import faults
from train.logs import get_logger

RESULT_STATUSES = ("completed", "diverged", "failed")
TEMP_SUFFIX = ".tmp"  # atomic writes' temp files: .<name>.<random>.tmp beside their target
LOCK_NAME = ".lock"
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def warn(message: str) -> None:
    """A `warning: ...` line on stderr: a fault that the run survives, said once, plainly."""
    get_logger("run").warning(message)


SECRET_ENV = ("WANDB_API_KEY",)  # environment variables whose values must never be written


def scrub_secrets(obj):
    """`obj` (a string, or lists and dicts of them) with the values of secret environment variables
    masked, should an interpolation such as ${oc.env:WANDB_API_KEY} have put one into the config."""
    secrets = [v for v in (os.environ.get(var, "") for var in SECRET_ENV) if len(v) >= 8]
    if not secrets:
        return obj
    if isinstance(obj, str):
        for value in secrets:
            obj = obj.replace(value, "***")
        return obj
    if isinstance(obj, dict):
        return {k: scrub_secrets(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(scrub_secrets(v) for v in obj)
    return obj


def atomic_write_bytes(path: Path, data: bytes) -> None:
    atomic_write_stream(path, lambda handle: handle.write(data))


def atomic_write_stream(path: Path, write) -> None:
    """Write a file atomically from `write(handle)`, which writes straight into the temp file (a
    checkpoint streamed by torch.save is never whole in memory): temp file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are for the whole group to read
    kind = faults.kind_of(path.name)
    try:
        with os.fdopen(fd, "wb") as handle:
            if faults.active():  # a fault point with the temp file half written
                write(handle)
                handle.truncate(handle.tell() // 2)
                handle.flush()
                os.fsync(handle.fileno())
                faults.hit(f"{kind}-write", path=path)
                handle.seek(0)
                handle.truncate()
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        faults.hit(f"{kind}-rename", path=path)
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        cause = error.__context__
        if isinstance(error, RuntimeError) and isinstance(cause, OSError) and cause.errno is not None:
            # torch.save's zip writer, failing to write (a full disk), then fails again while
            # closing the archive with a RuntimeError that hides the OSError: raise the real one
            error = cause
        if isinstance(error, OSError) and error.filename is None:
            error.filename = str(path)  # a failed write() names no file; say which one (e.g. disk full)
        if error is cause:
            raise cause from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def remove_temp_files(folder: Path) -> int:
    """Delete temp files that interrupted atomic writes left in `folder` (and its checkpoints/).
    Only the process holding the run's lock may call this: nobody else is writing there."""
    removed = 0
    for where in (Path(folder), Path(folder) / "checkpoints"):
        if where.is_dir():
            for tmp in where.glob(f".*{TEMP_SUFFIX}"):
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed


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
        warn(f"{path}: does not parse; treating the run as not finished")
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
                warn(f"{self.path}:{number}: truncated or corrupt line skipped")
        return rows

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows past the checkpoint so the log has each step exactly once."""
        kept = [row for row in self.rows() if row.get("step", -1) <= step]
        atomic_write_bytes(self.path, "".join(json.dumps(row) + "\n" for row in kept).encode())

    def append(self, row: dict) -> None:
        line = json.dumps(row) + "\n"
        try:
            with open(self.path, "a") as handle:
                if faults.active():  # a fault point with half of the line written
                    handle.write(line[:len(line) // 2])
                    handle.flush()
                    faults.hit("metrics", step=row.get("step"), path=self.path)
                    line = line[len(line) // 2:]
                handle.write(line)
                handle.flush()
        except OSError as error:
            if error.filename is None:
                error.filename = str(self.path)
            raise


ACQUIRE_TRIES = 10
ACQUIRE_RETRY_S = 0.05


class RunLocked(RuntimeError):
    """Another live process holds the run directory's lock."""


class RunLock:
    """An exclusive lock on a run directory, held for the life of the process that trains it.

    It is an flock() on `<run dir>/.lock`. The kernel drops the lock when its process ends, however
    it ends (SIGKILL, OOM, a node reboot), so a lock never outlives its holder: a `.lock` file left
    by a dead process is stale and is simply taken over. The file records the holder's pid, host
    and start time, for the message that a second process prints. On NFS, Linux maps flock onto
    NFS byte-range locks, which work across hosts.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._handle = None

    def acquire(self) -> None:
        """Take the lock, or raise RunLocked naming its holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        # a `run_is_locked` probe (a sweep planning its grid) holds a shared lock for microseconds;
        # a trainer holds it for the whole run, so a lock still taken after the retries is a real holder
        for _ in range(ACQUIRE_TRIES):
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    handle.close()
                    raise
                time.sleep(ACQUIRE_RETRY_S)
        else:
            handle.close()
            raise RunLocked(f"{self.path.parent}: locked by another process ({self.holder()})")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": platform.node(), "since": time.time()}) + "\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.truncate(0)
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            info = {}
        return f"pid {info.get('pid', '?')} on {info.get('host', '?')}"

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def run_is_locked(run_dir: Path) -> bool:
    """True while a live process holds the run directory's lock (a stale .lock file is not held)."""
    path = Path(run_dir) / LOCK_NAME
    try:
        handle = open(path)
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


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
