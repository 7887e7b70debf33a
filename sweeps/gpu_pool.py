"""`hydra/launcher=gpu_pool`: run every job of a sweep as a fresh process pinned to free GPUs.

One machine, G GPUs, N jobs. The pool has G x runs_per_gpu slots, a slot being (gpu, lane). A job
that asks for k GPUs (`gpus_per_run`) takes one free lane on each of k distinct GPUs, and runs as

    CUDA_VISIBLE_DEVICES=<its GPUs> <command> <the job's overrides>          (k = 1)
    CUDA_VISIBLE_DEVICES=<its GPUs> python -m torch.distributed.run --standalone
        --nproc_per_node=k -m train <the job's overrides> world_size=k        (k > 1)

with `command` defaulting to `[sys.executable, "-m", "train"]`. Jobs wait in a FIFO queue until
enough GPUs have a free lane (and fewer than `max_concurrent` jobs are running), so two jobs never
share a GPU beyond `runs_per_gpu`. Each job's stdout and stderr go to `<out_dir>/job.log` (the
job's `out_dir=` override), or to `<hydra.sweep.dir>/<job number>/job.log` when it has none. A job
that exits 0 is COMPLETED; any other exit is FAILED, with an exception that names the log, and the
other jobs go on.

submitit's local executor and joblib cannot do this: the first gives all jobs the same
CUDA_VISIBLE_DEVICES, the second reuses worker processes that have already started CUDA.

Pure Python (no torch import at module level); Hydra instantiates the shim in
hydra_plugins/isoflop/gpu_pool_launcher.py, which is where the config fields are declared.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher

from train.logs import get_logger

log = get_logger("sweep")

LOG_NAME = "job.log"
TERMINATE_GRACE_S = 30.0


class GpuPoolError(ValueError):
    """A launcher setting that cannot work (no GPUs, more GPUs per run than the pool has, ...)."""


class JobFailed(RuntimeError):
    """A job's process exited with a non-zero code (or could not start); the message names its log."""


# --------------------------------------------------------------------------------------------------
# Settings


def parse_gpu_list(gpus: Any) -> list[str] | None:
    """GPU ids as strings; None for "auto". Accepts a list ([0, 1]) or a string ("0,1", "auto")."""
    if gpus is None:
        return None
    if isinstance(gpus, (int,)) and not isinstance(gpus, bool):
        return [str(gpus)]
    if isinstance(gpus, str):
        text = gpus.strip()
        if text.lower() == "auto":
            return None
        text = text.strip("[]")
        return [g.strip().strip("'\"") for g in text.split(",") if g.strip()]
    try:
        items = list(gpus)
    except TypeError:
        raise GpuPoolError(f"hydra.launcher.gpus: expected a list of GPU ids or 'auto', got {gpus!r}") from None
    ids = [str(g).strip() for g in items]
    if any(not g for g in ids):
        raise GpuPoolError(f"hydra.launcher.gpus: empty GPU id in {items!r}")
    return ids


def detect_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else nvidia-smi, else torch."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [g.strip() for g in visible.split(",") if g.strip()]
        # "-1" (or any invalid id) hides every GPU after it from CUDA
        ids = ids[: ids.index("-1")] if "-1" in ids else ids
        if ids:
            return ids
        raise GpuPoolError("hydra.launcher.gpus=auto: CUDA_VISIBLE_DEVICES is set but lists no GPU "
                           f"({visible!r}); unset it or give the ids, e.g. 'hydra.launcher.gpus=[0,1]'")
    tried = []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        ids = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        if out.returncode == 0 and ids:
            return ids
        tried.append(f"nvidia-smi exited {out.returncode} listing {len(ids)} GPUs")
    except (OSError, subprocess.SubprocessError) as error:
        tried.append(f"nvidia-smi: {error.__class__.__name__}: {error}")
    try:
        import torch  # lazily: only "auto" on a box without nvidia-smi gets here
        count = torch.cuda.device_count()
        if count > 0:
            return [str(i) for i in range(count)]
        tried.append("torch.cuda.device_count() = 0")
    except Exception as error:  # torch missing or broken
        tried.append(f"torch: {error.__class__.__name__}: {error}")
    raise GpuPoolError("hydra.launcher.gpus=auto: found no GPU (" + "; ".join(tried) + "). "
                       "On a machine without GPUs use the default launcher; to force ids, give them, "
                       "e.g. 'hydra.launcher.gpus=[0,1]'")


def distributed_command(command: Sequence[str], nproc: int) -> list[str]:
    """`command` run under torch.distributed.run with nproc processes on one node.

    [py, "-m", mod, *args] -> [py, "-m", "torch.distributed.run", "--standalone",
    "--nproc_per_node=k", "-m", mod, *args]; [py, script, *args] likewise with the script.
    """
    command = list(command)
    is_python = "python" in Path(command[0]).name.lower() or command[0] == sys.executable if command else False
    if len(command) < 2 or not is_python:
        raise GpuPoolError(f"hydra.launcher.gpus_per_run={nproc}: torchrun needs a command that starts with a "
                           f"Python interpreter (python -m module | python script.py), got {command!r}; "
                           "or set hydra.launcher.torchrun=false and start the processes yourself")
    torchrun = [command[0], "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    return torchrun + command[1:]


@dataclass
class PoolSettings:
    gpus: Optional[list[str]]              # None: auto-detect at launch
    gpus_per_run: int = 1
    runs_per_gpu: int = 1
    max_concurrent: Optional[int] = None   # None: as many as the slots allow
    command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "train"])
    torchrun: bool = True
    log_name: str = LOG_NAME

    @classmethod
    def from_args(cls, gpus: Any = "auto", gpus_per_run: int = 1, runs_per_gpu: int = 1,
                  max_concurrent: Optional[int] = None, command: Optional[Iterable[str]] = None,
                  torchrun: bool = True, log_name: str = LOG_NAME) -> "PoolSettings":
        ids = parse_gpu_list(gpus)
        settings = cls(gpus=ids, gpus_per_run=_int("gpus_per_run", gpus_per_run),
                       runs_per_gpu=_int("runs_per_gpu", runs_per_gpu),
                       max_concurrent=None if max_concurrent is None else _int("max_concurrent", max_concurrent),
                       command=[str(c) for c in command] if command else [sys.executable, "-m", "train"],
                       torchrun=bool(torchrun), log_name=str(log_name))
        settings.check()
        return settings

    def check(self, pool: Optional[list[str]] = None) -> None:
        pool = self.gpus if pool is None else pool
        if self.gpus_per_run < 1:
            raise GpuPoolError(f"hydra.launcher.gpus_per_run: must be >= 1, got {self.gpus_per_run}")
        if self.runs_per_gpu < 1:
            raise GpuPoolError(f"hydra.launcher.runs_per_gpu: must be >= 1, got {self.runs_per_gpu}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise GpuPoolError(f"hydra.launcher.max_concurrent: must be >= 1 (or null), got {self.max_concurrent}")
        if not self.command:
            raise GpuPoolError("hydra.launcher.command: empty command")
        if pool is None:
            return
        if not pool:
            raise GpuPoolError("hydra.launcher.gpus: the GPU pool is empty; list GPU ids, e.g. "
                               "'hydra.launcher.gpus=[0,1]', or use gpus=auto")
        if len(set(pool)) != len(pool):
            raise GpuPoolError(f"hydra.launcher.gpus: duplicate GPU ids in {pool}; "
                               "use runs_per_gpu to put several runs on one GPU")
        if self.gpus_per_run > len(pool):
            raise GpuPoolError(f"hydra.launcher.gpus_per_run={self.gpus_per_run}: more than the pool's "
                               f"{len(pool)} GPUs {pool}")
        if self.gpus_per_run > 1 and self.torchrun:
            distributed_command(self.command, self.gpus_per_run)  # raises on a non-Python command


def _int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise GpuPoolError(f"hydra.launcher.{name}: expected an integer, got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise GpuPoolError(f"hydra.launcher.{name}: expected an integer, got {value!r}") from None
    if number != value and str(number) != str(value).strip():
        raise GpuPoolError(f"hydra.launcher.{name}: expected an integer, got {value!r}")
    return number


# --------------------------------------------------------------------------------------------------
# The pool of (gpu, lane) slots


class SlotPool:
    """Free lanes per GPU. Not thread-safe by itself: the launcher holds its lock around calls."""

    def __init__(self, gpus: Sequence[str], runs_per_gpu: int):
        self.gpus = list(gpus)
        self.busy = {g: [False] * runs_per_gpu for g in self.gpus}

    def acquire(self, k: int) -> list[tuple[str, int]] | None:
        """One free lane on each of k distinct GPUs, least-loaded GPUs first; None if not possible."""
        candidates = [(sum(lanes), i, g) for i, (g, lanes) in enumerate(self.busy.items()) if not all(lanes)]
        if len(candidates) < k:
            return None
        slots = []
        for _, _, gpu in sorted(candidates)[:k]:
            lane = self.busy[gpu].index(False)
            self.busy[gpu][lane] = True
            slots.append((gpu, lane))
        return sorted(slots, key=lambda s: self.gpus.index(s[0]))

    def release(self, slots: Iterable[tuple[str, int]]) -> None:
        for gpu, lane in slots:
            assert self.busy[gpu][lane], f"slot ({gpu}, {lane}) released twice"
            self.busy[gpu][lane] = False


# --------------------------------------------------------------------------------------------------
# Jobs


def override_value(overrides: Sequence[str], key: str) -> str | None:
    """The value of `key=...` (also `+key=`/`++key=`) among Hydra overrides, unquoted; last one wins."""
    value = None
    for item in overrides:
        name, sep, rest = str(item).partition("=")
        if sep and name.lstrip("+") == key:
            rest = rest.strip()
            if len(rest) >= 2 and rest[0] == rest[-1] and rest[0] in "'\"":
                rest = rest[1:-1]
            value = rest
    return value


def describe_job(overrides: Sequence[str]) -> str:
    """`C=1e+12 N=3.5e+04` for sweep points; the overrides themselves for anything else."""
    budget, params = override_value(overrides, "budget.flops"), override_value(overrides, "model.params")
    if budget is not None or params is not None:
        def fmt(v: str | None) -> str:
            try:
                return f"{float(v):.3g}"
            except (TypeError, ValueError):
                return str(v)
        return f"C={fmt(budget)} N={fmt(params)}"
    return " ".join(overrides) or "(no overrides)"


@dataclass
class _Job:
    idx: int
    overrides: list[str]
    log: Path
    slots: list[tuple[str, int]] = field(default_factory=list)
    proc: Optional[subprocess.Popen] = None
    started: float = 0.0
    ret: Optional[JobReturn] = None


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _tail(path: Path, lines: int = 5) -> list[str]:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 8192))
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip() and not line.startswith("=== gpu_pool")][-lines:]


class _Interrupted(BaseException):
    pass


class GpuPoolLauncher(Launcher):
    """A Hydra launcher: every job a fresh subprocess on GPUs from a pool. See the module docstring."""

    def __init__(self, gpus: Any = "auto", gpus_per_run: int = 1, runs_per_gpu: int = 1,
                 max_concurrent: Optional[int] = None, command: Optional[List[str]] = None,
                 torchrun: bool = True, log_name: str = LOG_NAME) -> None:
        super().__init__()
        # Static checks now; "auto" is resolved at launch, so a dry run works on a box without GPUs.
        self.settings = PoolSettings.from_args(gpus=gpus, gpus_per_run=gpus_per_run, runs_per_gpu=runs_per_gpu,
                                               max_concurrent=max_concurrent, command=command,
                                               torchrun=torchrun, log_name=log_name)
        self.config = None
        self.hydra_context = None
        self.task_function = None
        self._print_lock = threading.Lock()

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.config = config

    # ---- helpers
    def say(self, message: str, warning: bool = False) -> None:
        with self._print_lock:  # the pool's threads report jobs as they end
            (log.warning if warning else log.info)(message)

    def _sweep_dir(self) -> Path:
        try:
            return Path(str(self.config.hydra.sweep.dir))
        except Exception:  # no Hydra config (the API used directly)
            return Path("gpu_pool_logs")

    def _log_path(self, idx: int, overrides: Sequence[str]) -> Path:
        out_dir = override_value(overrides, "out_dir")
        base = Path(out_dir) if out_dir else self._sweep_dir() / str(idx)
        return base / self.settings.log_name

    def job_command(self, overrides: Sequence[str]) -> list[str]:
        s = self.settings
        base = distributed_command(s.command, s.gpus_per_run) if s.gpus_per_run > 1 and s.torchrun else s.command
        extra = []
        if s.gpus_per_run > 1 and override_value(overrides, "world_size") is None:
            # the trainer plans its batch for this many ranks (a whole multiple of it), as the sweep did
            extra = [f"world_size={s.gpus_per_run}"]
        return list(base) + [str(o) for o in overrides] + extra

    def _label(self, slots: Sequence[tuple[str, int]]) -> str:
        if self.settings.runs_per_gpu > 1:
            return "[gpu " + ",".join(f"{g}#{lane}" for g, lane in slots) + "]"
        return "[gpu " + ",".join(g for g, _ in slots) + "]"

    def _task_name(self) -> str:
        try:
            return str(self.config.hydra.job.name)
        except Exception:
            return "train"

    # ---- the launch
    def resolve_pool(self) -> list[str]:
        pool = self.settings.gpus if self.settings.gpus is not None else detect_gpus()
        self.settings.check(pool)
        device = str((self.config or {}).get("device", "auto")) if hasattr(self.config or {}, "get") else "auto"
        if self.settings.gpus is not None and self.settings.command == [sys.executable, "-m", "train"] \
                and device != "cpu":
            # The training command on listed GPUs that CUDA cannot see would train on the CPU under a
            # GPU's label. (A stand-in command of one's own may not need CUDA: it is not checked; with
            # device=cpu the pool's slots are only lanes of concurrent CPU runs, as scripts/gpu_check.sh
            # --cpu uses them.)
            try:
                import torch
                visible = torch.cuda.device_count()
            except (ImportError, RuntimeError):
                visible = 0
            if visible == 0:
                raise GpuPoolError(f"hydra.launcher.gpus: lists GPU(s) {pool}, but torch sees no CUDA GPU on this "
                                   "machine, so the runs would train on the CPU; drop hydra/launcher=gpu_pool to "
                                   "train here (or set device=cpu to run CPU jobs side by side), or run the sweep "
                                   "on a machine with GPUs")
        return pool

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        s = self.settings
        try:
            pool = self.resolve_pool()
        except GpuPoolError as error:
            if self.config is None:   # the API used directly: the caller handles it
                raise
            print(f"error: {error}", file=sys.stderr)   # under Hydra: one clear line, before any job starts
            sys.exit(2)
        jobs = [_Job(idx=initial_job_idx + i, overrides=[str(o) for o in ov],
                     log=self._log_path(initial_job_idx + i, ov)) for i, ov in enumerate(job_overrides)]
        if not jobs:
            return []
        # The slots bound how many run at once: G * runs_per_gpu lanes, gpus_per_run of them per job.
        limit = (len(pool) * s.runs_per_gpu) // s.gpus_per_run
        limit = min(limit, s.max_concurrent or limit)
        self.say(f"gpu_pool: {len(jobs)} jobs over GPUs [{','.join(pool)}], {s.gpus_per_run} GPU(s) per run, "
                 f"up to {s.runs_per_gpu} run(s) per GPU, at most {limit} at once; logs: <out_dir>/{s.log_name}")

        slots = SlotPool(pool, s.runs_per_gpu)
        cond = threading.Condition()
        running: dict[int, _Job] = {}
        waiters: list[threading.Thread] = []
        counts = {"done": 0, "failed": 0}
        t0 = time.time()

        def finish(job: _Job, code: int) -> None:
            elapsed = time.time() - job.started
            try:
                with open(job.log, "a") as handle:
                    handle.write(f"=== gpu_pool: job #{job.idx} {_exit_text(code)} after {elapsed:.1f}s\n")
            except OSError:
                pass
            if code == 0:
                ret = JobReturn(overrides=job.overrides, working_dir=os.getcwd(), task_name=self._task_name(),
                                status=JobStatus.COMPLETED,
                                _return_value={"returncode": 0, "log": str(job.log),
                                               "gpus": [g for g, _ in job.slots], "wall_s": elapsed})
            else:
                ret = JobReturn(overrides=job.overrides, working_dir=os.getcwd(), task_name=self._task_name(),
                                status=JobStatus.FAILED,
                                _return_value=JobFailed(f"job #{job.idx} ({describe_job(job.overrides)}) failed: "
                                                        f"{_exit_text(code)}; log: {job.log}"))
            with cond:
                job.ret = ret
                slots.release(job.slots)
                running.pop(job.idx, None)
                counts["done"] += 1
                counts["failed"] += code != 0
                progress = f"({counts['done']}/{len(jobs)} done)"
                cond.notify_all()
            label = self._label(job.slots)
            if code == 0:
                self.say(f"{label} finished #{job.idx} {describe_job(job.overrides)} in {elapsed:.1f}s {progress}")
            else:
                lines = [f"{label} FAILED #{job.idx} {describe_job(job.overrides)}: {_exit_text(code)} after "
                         f"{elapsed:.1f}s {progress}; log: {job.log}"]
                lines += [f"    | {line}" for line in _tail(job.log)]
                self.say("\n".join(lines), warning=True)

        def wait_for(job: _Job) -> None:
            code = job.proc.wait()
            finish(job, code)

        def start(job: _Job) -> None:
            gpus = [g for g, _ in job.slots]
            env = dict(os.environ)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
            env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # ids as nvidia-smi numbers them
            env.setdefault("PYTHONUNBUFFERED", "1")            # logs as the run goes
            cmd = self.job_command(job.overrides)
            job.started = time.time()
            try:
                job.log.parent.mkdir(parents=True, exist_ok=True)
                with open(job.log, "a") as log:
                    log.write(f"=== gpu_pool: job #{job.idx} on GPU {','.join(gpus)} at "
                              f"{time.strftime('%Y-%m-%d %H:%M:%S')}: CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']} "
                              f"{shlex.join(cmd)}\n")
                    log.flush()
                    # Own session: the launcher alone decides when a job stops, and stops its whole group.
                    job.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                env=env, cwd=os.getcwd(), start_new_session=True)
            except OSError as error:
                self.say(f"{self._label(job.slots)} could not start #{job.idx}: {error}", warning=True)
                try:
                    with open(job.log, "a") as log:
                        log.write(f"=== gpu_pool: could not start: {error}\n")
                except OSError:
                    pass
                finish(job, 127)
                return
            self.say(f"{self._label(job.slots)} started #{job.idx} {describe_job(job.overrides)} -> {job.log}")
            thread = threading.Thread(target=wait_for, args=(job,), name=f"gpu_pool-job-{job.idx}", daemon=True)
            waiters.append(thread)
            thread.start()

        previous = self._install_sigterm()
        try:
            for job in jobs:
                with cond:
                    while True:
                        if len(running) < limit:
                            taken = slots.acquire(s.gpus_per_run)
                            if taken is not None:
                                job.slots = taken
                                running[job.idx] = job
                                break
                        cond.wait(timeout=0.5)
                start(job)
            while True:
                with cond:
                    if not running:
                        break
                    cond.wait(timeout=0.5)
            for thread in waiters:
                thread.join()
        except (KeyboardInterrupt, _Interrupted):
            stopping = list(running.values())
            self.say(f"gpu_pool: interrupted; stopping {len(stopping)} running job(s) "
                     "(re-run the same command to resume them from their checkpoints)")
            self._stop(stopping)
            raise KeyboardInterrupt from None
        finally:
            self._restore_sigterm(previous)

        self.say(f"gpu_pool: {len(jobs)} jobs in {time.time() - t0:.1f}s: {len(jobs) - counts['failed']} "
                 f"exited 0, {counts['failed']} failed")
        return [job.ret for job in jobs]

    # ---- stopping
    @staticmethod
    def _install_sigterm():
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_sigterm(signum, frame):
            raise _Interrupted()
        return signal.signal(signal.SIGTERM, on_sigterm)

    @staticmethod
    def _restore_sigterm(previous) -> None:
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)

    def _stop(self, jobs: list[_Job]) -> None:
        """SIGTERM each job's process group (torchrun forwards it to its ranks), SIGKILL stragglers."""
        procs = [j.proc for j in jobs if j.proc is not None]
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.time() + TERMINATE_GRACE_S
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
