"""The GPU-box launcher (`hydra/launcher=gpu_pool`) with fake GPU ids.

Every job runs a tiny recorder program instead of training: it writes down the
CUDA_VISIBLE_DEVICES it was given, its pid and when it started and ended, then sleeps. From those
intervals the tests check that every job ran, that the pool ran as many jobs at once as it has
slots, and that no two jobs that overlapped in time were ever given the same GPU. With
`barrier=K` the first K jobs wait for each other before they sleep: on a loaded machine a job's
interpreter can take longer to start than the one before it sleeps, and the peak that the pool
allows would then go unmeasured.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import types
from itertools import combinations
from pathlib import Path

import pytest
from hydra.core.utils import JobStatus
from omegaconf import OmegaConf

from sweeps.gpu_pool import (GpuPoolError, GpuPoolLauncher, JobFailed, SlotPool, detect_gpus,
                             distributed_command, override_value)
from tests.conftest import REPO

RECORDER = textwrap.dedent("""\
    import json, os, sys, time
    start = time.time()
    record, args = sys.argv[1], sys.argv[2:]
    opts = dict(a.split("=", 1) for a in args if "=" in a)
    if "barrier" in opts:  # wait (10 s at most) until that many jobs have started, so that they surely overlap
        starts = os.path.join(os.path.dirname(record), "starts")
        os.makedirs(starts, exist_ok=True)
        open(os.path.join(starts, str(os.getpid())), "w").close()
        while len(os.listdir(starts)) < int(opts["barrier"]) and time.time() < start + 10:
            time.sleep(0.02)
    time.sleep(float(opts.get("sleep", 0.5)))
    entry = {"job": opts.get("job"), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid(),
             "rank": os.environ.get("LOCAL_RANK"), "world": os.environ.get("WORLD_SIZE"),
             "start": start, "end": time.time(), "args": args}
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (json.dumps(entry) + "\\n").encode())   # one O_APPEND write: lines never interleave
    os.close(fd)
    print("recorder: job", opts.get("job"), "on GPUs", entry["gpus"])
    sys.exit(int(opts.get("exit", 0)))
    """)


@pytest.fixture
def recorder(tmp_path):
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    record = tmp_path / "record.jsonl"
    return [sys.executable, str(script), str(record)], record


def with_barrier(command: list[str], jobs_at_once: int) -> list[str]:
    return [*command, f"barrier={jobs_at_once}"]


def read_record(path: Path) -> list[dict]:
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    for entry in entries:
        entry["gpu_set"] = set(entry["gpus"].split(","))
    return entries


def overlapping(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def max_concurrency(entries: list[dict]) -> int:
    events = sorted([(e["start"], 1) for e in entries] + [(e["end"], -1) for e in entries])
    level = peak = 0
    for _, step in events:  # at equal times, -1 sorts first: touching intervals do not overlap
        level += step
        peak = max(peak, level)
    return peak


def assert_no_shared_gpu(entries: list[dict], runs_per_gpu: int = 1) -> None:
    """No GPU is held by more than runs_per_gpu jobs at any instant."""
    if runs_per_gpu == 1:
        for a, b in combinations(entries, 2):
            if overlapping(a, b):
                assert not a["gpu_set"] & b["gpu_set"], f"jobs {a['job']} and {b['job']} overlapped on GPUs {a['gpus']} / {b['gpus']}"
    for gpu in set().union(*(e["gpu_set"] for e in entries)):
        on_gpu = [e for e in entries if gpu in e["gpu_set"]]
        assert max_concurrency(on_gpu) <= runs_per_gpu, f"GPU {gpu} ran more than {runs_per_gpu} jobs at once"


def jobs(tmp_path: Path, n: int, **options) -> list[list[str]]:
    """n jobs' overrides; options are recorder settings for all jobs (sleep=0.2) or some ({job: value})."""
    def settings(i: int) -> list[str]:
        picked = {k: (v.get(i) if isinstance(v, dict) else v) for k, v in options.items()}
        return [f"{k}={v}" for k, v in picked.items() if v is not None]
    return [[f"job={i}", f"out_dir={tmp_path / 'runs' / f'job{i}'}", *settings(i)] for i in range(n)]


def test_seven_jobs_over_three_gpus_never_share_one(tmp_path, recorder, capsys):
    command, record = recorder
    launcher = GpuPoolLauncher(gpus=[0, 1, 2], command=with_barrier(command, 3))
    returns = launcher.launch(jobs(tmp_path, 7), initial_job_idx=0)

    assert [r.status for r in returns] == [JobStatus.COMPLETED] * 7
    entries = read_record(record)
    assert sorted(int(e["job"]) for e in entries) == list(range(7))   # every job ran, once
    assert len({e["pid"] for e in entries}) == 7                       # each a fresh process
    assert all(len(e["gpu_set"]) == 1 and e["gpus"] in {"0", "1", "2"} for e in entries)
    assert max_concurrency(entries) == 3                              # the pool was kept full
    assert_no_shared_gpu(entries)
    # each job's stdout went to a log in its out_dir, and the launcher said where each job ran
    log = (tmp_path / "runs" / "job4" / "job.log").read_text()
    assert "recorder: job 4 on GPUs" in log and "exit code 0" in log
    out = capsys.readouterr().out
    assert out.count(" started #") == 7 and out.count(" finished #") == 7
    assert "[gpu 0] started #0" in out


def test_the_checker_catches_a_shared_gpu():
    """The overlap check is not vacuous: two overlapping jobs on GPU 1 fail it."""
    a = {"job": 0, "gpus": "0,1", "gpu_set": {"0", "1"}, "start": 0.0, "end": 1.0}
    b = {"job": 1, "gpus": "1", "gpu_set": {"1"}, "start": 0.5, "end": 1.5}
    with pytest.raises(AssertionError, match="overlapped"):
        assert_no_shared_gpu([a, b])
    assert_no_shared_gpu([a, b | {"start": 1.0}])                   # back to back is fine


def test_two_gpus_per_run_get_disjoint_pairs(tmp_path, recorder):
    command, record = recorder
    launcher = GpuPoolLauncher(gpus=[0, 1, 2, 3], gpus_per_run=2, command=with_barrier(command, 2), torchrun=False)
    returns = launcher.launch(jobs(tmp_path, 6), initial_job_idx=0)

    assert all(r.status == JobStatus.COMPLETED for r in returns)
    entries = read_record(record)
    assert sorted(int(e["job"]) for e in entries) == list(range(6))
    assert all(len(e["gpu_set"]) == 2 for e in entries)
    assert max_concurrency(entries) == 2
    assert_no_shared_gpu(entries)


def test_two_gpus_per_run_start_torchrun_with_two_ranks(tmp_path, recorder):
    command, record = recorder
    launcher = GpuPoolLauncher(gpus=["0", "1", "2", "3"], gpus_per_run=2, command=command)
    returns = launcher.launch(jobs(tmp_path, 2, sleep=0.2), initial_job_idx=0)

    assert [r.status for r in returns] == [JobStatus.COMPLETED] * 2, (tmp_path / "runs" / "job0" / "job.log").read_text()
    entries = read_record(record)
    for job in ("0", "1"):
        ranks = [e for e in entries if e["job"] == job]
        assert sorted(e["rank"] for e in ranks) == ["0", "1"] and {e["world"] for e in ranks} == {"2"}
        assert len({e["gpus"] for e in ranks}) == 1 and len(ranks[0]["gpu_set"]) == 2  # both ranks see the pair
        assert all(e["args"][-1] == "world_size=2" for e in ranks)  # the trainer plans for two ranks
    assert_no_shared_gpu([next(e for e in entries if e["job"] == job) for job in ("0", "1")])


def test_torchrun_command_line():
    assert distributed_command([sys.executable, "-m", "train"], 4) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m", "train"]
    assert distributed_command(["python3", "x.py", "a=1"], 2)[-3:] == ["--nproc_per_node=2", "x.py", "a=1"]
    with pytest.raises(GpuPoolError, match="Python interpreter"):
        GpuPoolLauncher(gpus=[0, 1], gpus_per_run=2, command=["srun", "train"]).resolve_pool()


def test_runs_per_gpu_puts_at_most_that_many_on_one_gpu(tmp_path, recorder, capsys):
    command, record = recorder
    launcher = GpuPoolLauncher(gpus=[0, 1], runs_per_gpu=2, command=with_barrier(command, 4))
    returns = launcher.launch(jobs(tmp_path, 8), initial_job_idx=0)

    assert all(r.status == JobStatus.COMPLETED for r in returns)
    entries = read_record(record)
    assert sorted(int(e["job"]) for e in entries) == list(range(8))
    assert max_concurrency(entries) == 4
    assert_no_shared_gpu(entries, runs_per_gpu=2)
    assert any(max_concurrency([e for e in entries if e["gpus"] == g]) == 2 for g in "01")
    # the first two jobs spread over both GPUs before any GPU takes a second run
    assert {e["gpus"] for e in entries if e["job"] in ("0", "1")} == {"0", "1"}
    assert "[gpu 0#1]" in capsys.readouterr().out


def test_max_concurrent_caps_the_pool(tmp_path, recorder):
    command, record = recorder
    launcher = GpuPoolLauncher(gpus=[0, 1, 2], max_concurrent=2, command=with_barrier(command, 2))
    launcher.launch(jobs(tmp_path, 4, sleep=0.3), initial_job_idx=0)
    assert max_concurrency(read_record(record)) == 2


def test_a_failing_job_is_failed_and_the_others_go_on(tmp_path, recorder, capsys):
    command, record = recorder
    launcher = GpuPoolLauncher(gpus=[0, 1], command=command)
    returns = launcher.launch(jobs(tmp_path, 5, exit={1: 3}), initial_job_idx=10)

    assert [r.status for r in returns] == [JobStatus.COMPLETED, JobStatus.FAILED] + [JobStatus.COMPLETED] * 3
    assert sorted(int(e["job"]) for e in read_record(record)) == list(range(5))
    error = returns[1]._return_value
    log = tmp_path / "runs" / "job1" / "job.log"
    assert isinstance(error, JobFailed) and "exit code 3" in str(error) and str(log) in str(error)
    with pytest.raises(JobFailed):
        returns[1].return_value
    assert returns[0].return_value["returncode"] == 0
    err = capsys.readouterr().err  # a failure is a warning, on stderr, at every log level but error
    assert "warning: " in err and "FAILED #11" in err and "recorder: job 1" in err  # numbered from initial_job_idx, log tail shown


def test_a_command_that_cannot_start_fails_every_job_cleanly(tmp_path):
    launcher = GpuPoolLauncher(gpus=[0], command=[str(tmp_path / "no-such-program")])
    returns = launcher.launch(jobs(tmp_path, 2), initial_job_idx=0)
    assert [r.status for r in returns] == [JobStatus.FAILED] * 2
    assert "exit code 127" in str(returns[0]._return_value)


@pytest.mark.parametrize("kwargs, message", [
    ({"gpus": []}, "pool is empty"),
    ({"gpus": [0, 1], "gpus_per_run": 3}, "more than the pool's 2 GPUs"),
    ({"gpus": [0, 0]}, "duplicate GPU ids"),
    ({"gpus": [0], "runs_per_gpu": 0}, "runs_per_gpu: must be >= 1"),
    ({"gpus": [0], "gpus_per_run": 1.5}, "gpus_per_run: expected an integer"),
])
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(GpuPoolError, match=message):
        GpuPoolLauncher(**kwargs)


def test_auto_detection(monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5")
    assert GpuPoolLauncher(gpus="auto").resolve_pool() == ["4", "5"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(GpuPoolError, match="lists no GPU"):
        detect_gpus()
    # no nvidia-smi on PATH and a torch that sees no CUDA device: a clear error, not an empty pool
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=types.SimpleNamespace(device_count=lambda: 0)))
    launcher = GpuPoolLauncher(gpus="auto")   # constructing is fine (a dry run needs no GPU) ...
    with pytest.raises(GpuPoolError, match="found no GPU"):
        launcher.launch([["job=0"]], initial_job_idx=0)   # ... launching is not
    # under Hydra (set up with a config) the same is one "error:" line and exit code 2
    launcher.setup(hydra_context=None, task_function=None, config=OmegaConf.create({}))
    with pytest.raises(SystemExit) as exit_info:
        launcher.launch([["job=0"]], initial_job_idx=0)
    assert exit_info.value.code == 2 and "error: hydra.launcher.gpus=auto: found no GPU" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=types.SimpleNamespace(device_count=lambda: 2)))
    assert detect_gpus() == ["0", "1"]


def test_slot_pool_and_override_parsing():
    pool = SlotPool(["0", "1", "2"], runs_per_gpu=1)
    assert pool.acquire(2) == [("0", 0), ("1", 0)]
    assert pool.acquire(2) is None            # only GPU 2 is free
    pool.release([("0", 0)])
    assert pool.acquire(2) == [("0", 0), ("2", 0)]
    assert override_value(["a=1", "out_dir='/x y/z'", "+b=2"], "out_dir") == "/x y/z"
    assert override_value(["+b=2"], "b") == "2" and override_value(["a=1"], "out_dir") is None


def test_a_real_hydra_sweep_runs_through_the_pool(tmp_path, recorder):
    """`python -m sweeps ... hydra/launcher=gpu_pool`: the IsoFLOP sweeper hands its grid to the pool."""
    command, record = recorder
    sweep_dir = tmp_path / "sweep"
    as_list = "[" + ",".join(f"'{c}'" for c in with_barrier(command, 3)) + "]"
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps", "sweep=demo", f"sweep.out_dir={sweep_dir}", "sweep.budgets=[1e12]",
         "sweep.sizes_per_budget=7", "sweep.span=8", "hydra/launcher=gpu_pool", "hydra.launcher.gpus=[0,1,2]",
         f"hydra.launcher.command={as_list}"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    entries = read_record(record)
    assert len(entries) == 7
    assert max_concurrency(entries) == 3
    assert_no_shared_gpu(entries)
    # each job got the sweep point's overrides, and its log lies in that point's run directory
    for entry in entries:
        out_dir = override_value(entry["args"], "out_dir")
        assert override_value(entry["args"], "model.params") and override_value(entry["args"], "budget.flops")
        assert Path(out_dir).parent == sweep_dir / "runs" and (Path(out_dir) / "job.log").exists()
    assert proc.stdout.count(" started #") == 7 and "C=1e+12" in proc.stdout


def test_hydra_reports_a_bad_pool_before_planning(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps", "sweep=demo", f"sweep.out_dir={tmp_path}", "hydra/launcher=gpu_pool",
         "hydra.launcher.gpus=[0,1]", "hydra.launcher.gpus_per_run=3"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "gpus_per_run=3: more than the pool's 2 GPUs" in proc.stderr + proc.stdout
    assert not (tmp_path / "plan.json").exists()


def test_a_sweep_for_two_gpus_per_run_plans_batches_for_two_ranks(tmp_path, demo_corpus):
    proc = subprocess.run(
        [sys.executable, "-m", "sweeps", "sweep=demo", f"sweep.out_dir={tmp_path}", "dry_run=true",
         "hydra/launcher=gpu_pool", "hydra.launcher.gpus=[0,1]", "hydra.launcher.gpus_per_run=2"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip().endswith(" new")]
    assert rows
    header = next(line for line in proc.stdout.splitlines() if " micro " in line)
    micro_column = header.split().index("micro") - 3  # "budget C", "params N", "tokens D": two words each
    for row in rows:
        micro, accum, world = map(int, row[micro_column].split("x"))
        assert world == 2 and int(row[micro_column - 1]) == micro * accum * world * 128  # batch tokens, seq_len 128
