"""The GPU check's steps, each time-boxed, with every figure written under one folder.

Run through scripts/gpu_check.sh, which makes hydra-core and the rest importable first (from the
wheels of scripts/gather_wheels.sh where they are missing):

    scripts/gpu_check.sh OUT_DIR            # one GPU, at most 10 minutes
    scripts/gpu_check.sh --cpu OUT_DIR      # the same steps at tiny sizes on the CPU (most of it the
                                            # sweep's 6 runs, 8.3M tokens in all)

Steps (a failed or timed-out step is recorded and the next one runs):

    tests   pytest -m gpu
    bench   scripts/bench.py: MFU and tokens/s against transformers' Llama (GPU: llama-160m, -1b,
            -410m, -70m at seq_len 2048, bf16, compiled, 8 sequences a step)
    memory  scripts/memory_check.py: measured peak memory per size beside the memory model's estimate
    sweep   python -m sweeps through the GPU pool: 2 budgets x 3 sizes (GPU: sweep=gpu_check, 3 runs
            per GPU; CPU: tiny models on a pool of one fake GPU id)
    fit     python -m analysis fit on the sweep

OUT_DIR receives summary.md (one row per step with its status, then the tables), steps.jsonl (one
JSON line per step), bench.jsonl, memory.jsonl, logs/<step>.log, sweep/ (the sweep directory),
fit/ (fit.json, report.md, figures) and gpu_check.tar.gz (all of it but checkpoints, for machines
that hand back only a few files). Exit code 0 when every step ran ok or was skipped, 1 otherwise.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
STEP_NAMES = ("tests", "bench", "memory", "sweep", "fit")
TARBALL = "gpu_check.tar.gz"
TAR_MAX_FILE_BYTES = 8 * 2 ** 20  # larger files (checkpoints, data) stay out of the tarball

# What each mode runs: the sizes, and each step's time box in seconds (SIGTERM at the box, SIGKILL
# `grace` seconds later, 10 unless given). GPU: at most about 580 s with every box and grace used
# up, so the check fits 10 minutes on one H100/H200. The sweep's grace outlasts the GPU pool's
# 30 s for stopping its runs, which run in their own sessions.
GPU = {
    "timeouts": {"tests": 40, "bench": 190, "memory": 50, "sweep": 170, "fit": 30},
    "grace": {"sweep": 40},
    # the targets' sizes first (45% MFU at the 124M class, 55% at 1B): if compiling eats the time
    # box, the size cut is the least needed one
    "bench": ["--sizes", "llama-160m", "llama-1b", "llama-410m", "llama-70m", "--seq-len", "2048", "--batch", "8",
              "--precision", "bf16", "--compile", "--steps", "10", "--warmup", "3", "--repeats", "5",
              "--time-budget", "120"],
    "memory": ["--sizes", "llama-70m", "llama-160m", "llama-410m", "llama-1b", "--seq-len", "2048", "--batch", "8",
               "--precision", "bf16"],
    # configs/sweep/gpu_check.yaml: 3.5e14 and 7e14 FLOPs x 3 sizes of 49M-114M, seq_len 2048
    "sweep": ["sweep=gpu_check", "hydra/launcher=gpu_pool", "hydra.launcher.runs_per_gpu=3"],
    "env": {},
}
CPU = {
    # generous: a shared 2-core machine under load trains the sweep 2-4x slower than an idle one
    "timeouts": {"tests": 120, "bench": 120, "memory": 90, "sweep": 600, "fit": 60},
    "grace": {"sweep": 40},
    "bench": ["--sizes", "3e4", "6e4", "--vocab", "512", "--tied", "--seq-len", "64", "--batch", "4",
              "--steps", "2", "--warmup", "1", "--repeats", "3", "--device", "cpu", "--threads", "1", "--no-compile"],
    "memory": ["--sizes", "3e5", "1e6", "--vocab", "2048", "--seq-len", "256", "--batch", "4", "--device", "cpu"],
    # two budgets of the demo grid, 3 sizes each (11.9K-28.6K parameters, 0.8-2.3M tokens a run),
    # whose minima the recorded demo found inside the sizes (docs/sweeps.md); 3 runs at once on a
    # pool of one fake GPU id, one thread each
    "sweep": ["sweep=demo", "sweep.budgets=[1e11,2e11]", "sweep.sizes_per_budget=3", "sweep.span=2",
              "device=cpu", "hydra/launcher=gpu_pool", "hydra.launcher.gpus=[0]", "hydra.launcher.runs_per_gpu=3"],
    "env": {"OMP_NUM_THREADS": "1"},
}


def say(msg: str) -> None:
    print(f"[gpu_check] {msg}", flush=True)


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass  # a line cut by a kill
    return rows


def run_command(cmd: list[str], log: Path, timeout: float, grace: float, env: dict) -> tuple[int | None, bool]:
    """Run cmd in its own process group, its output into log and onto stdout; at `timeout` seconds
    SIGTERM the group (the GPU pool then stops its runs), SIGKILL it `grace` seconds later.
    Returns (exit code, timed out)."""
    with open(log, "a") as out:
        out.write("$ " + " ".join(cmd) + "\n")
        out.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=REPO, env=env, start_new_session=True, text=True, bufsize=1)
        except OSError as error:
            out.write(f"could not start: {error}\n")
            return 127, False

        def pump():
            for line in proc.stdout:
                out.write(line)
                out.flush()
                sys.stdout.write("  | " + line)
                sys.stdout.flush()
        thread = threading.Thread(target=pump, daemon=True)
        thread.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            say(f"time box of {timeout:.0f}s reached: stopping {cmd[1] if len(cmd) > 1 else cmd[0]}")
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
        thread.join(timeout=5)
        out.write(f"exit code {proc.returncode}{' (time box reached)' if timed_out else ''}\n")
        return proc.returncode, timed_out


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def last_line(log: Path, *, containing: str = "") -> str:
    lines = [line.strip() for line in log.read_text().splitlines() if line.strip() and containing in line]
    lines = [line for line in lines if not line.startswith("exit code")]
    return lines[-1] if lines else ""


# ---------------------------------------------------------------------------------------------
# The steps: each returns (status, note); status is ok, partial, skipped, failed or timeout.

class Check:
    def __init__(self, mode: str, out: Path, sweep_extra: list[str]):
        self.mode, self.out = mode, out
        self.cfg = GPU if mode == "gpu" else CPU
        self.sweep_extra = sweep_extra
        self.env = os.environ | {"PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1",
                                 "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"} | self.cfg["env"]
        paths = self.env.get("PYTHONPATH", "").split(os.pathsep)
        if str(REPO) not in paths:  # this checkout's code, whatever else is installed
            self.env["PYTHONPATH"] = os.pathsep.join([str(REPO), *[p for p in paths if p]])
        self.logs = out / "logs"

    def run(self, step: str, cmd: list[str]) -> tuple[int | None, bool, Path]:
        log = self.logs / f"{step}.log"
        rc, timed_out = run_command(cmd, log, self.cfg["timeouts"][step], self.cfg["grace"].get(step, 10), self.env)
        return rc, timed_out, log

    def tests(self):
        rc, timed_out, log = self.run("tests", [PY, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                                                "--continue-on-collection-errors", "--junitxml",
                                                str(self.out / "tests.xml"), "tests"])
        tail = last_line(log)
        if timed_out:
            return "timeout", tail
        if rc == 5:
            return "skipped", "no test is marked gpu"
        if rc == 0 and "passed" not in tail and "skipped" in tail:
            return "skipped", tail.strip("= ") + (" (no CUDA here)" if self.mode == "cpu" else "")
        return ("ok" if rc == 0 else "failed"), tail.strip("= ")

    def bench(self):
        path = self.out / "bench.jsonl"
        path.unlink(missing_ok=True)
        sizes = self.cfg["bench"][self.cfg["bench"].index("--sizes") + 1:]
        sizes = sizes[:next((i for i, a in enumerate(sizes) if a.startswith("--")), len(sizes))]
        rc, timed_out, log = self.run("bench", [PY, "scripts/bench.py", *self.cfg["bench"], "--json", str(path)])
        rows = [r for r in read_jsonl(path) if not r.get("summary")]
        done = [r for r in rows if "error" not in r]
        parts = [f"{len(done)}/{len(sizes)} sizes"]
        if done and "mfu" in done[0]:
            parts.append("MFU " + ", ".join(f"{r['size']} {r['mfu']:.1%}" for r in done))
        if done and all("ratio" in r for r in done):
            parts.append("ours/HF " + ", ".join(f"{r['ratio']:.2f}" for r in done))
        parts += [f"{r['size']}: {r['error']}" for r in rows if "error" in r]
        note = "; ".join(parts)
        if timed_out:
            return "timeout", note
        if rc == 0 and len(done) == len(sizes):
            return "ok", note
        return ("partial" if done else "failed"), note + ("" if done else "; " + last_line(log))

    def memory(self):
        path = self.out / "memory.jsonl"
        path.unlink(missing_ok=True)
        rc, timed_out, log = self.run("memory", [PY, "scripts/memory_check.py", *self.cfg["memory"], "--json",
                                                 str(path)])
        rows = read_jsonl(path)
        if not rows:
            return ("timeout" if timed_out else "failed"), last_line(log)
        status = "timeout" if timed_out else "ok" if rc == 0 else "partial"
        if "estimate_gb" not in rows[0]:
            why = rows[0].get("estimate_error") or rows[0].get("estimate_source")
            note = f"measured {len(rows)} sizes; estimate skipped: {why}"
            return ("partial" if status == "ok" else status), note
        note = "estimate/measured - 1: " + ", ".join(f"{r['size']} {r['error']:+.0%}" for r in rows
                                                      if r.get("error") is not None)
        if rows[0]["device"] == "cpu":
            note += " (CPU proxy: peak RSS)"
        return status, note

    def sweep(self):
        sweep_dir = self.out / "sweep"
        rc, timed_out, log = self.run("sweep", [PY, "-m", "sweeps", *self.cfg["sweep"], f"sweep.out_dir={sweep_dir}",
                                                "wandb.mode=disabled", *self.sweep_extra])
        runs = sweep_runs(sweep_dir)
        completed = sum(r["status"] == "completed" for r in runs)
        planned = len(json.loads((sweep_dir / "plan.json").read_text()).get("points", [])) \
            if (sweep_dir / "plan.json").is_file() else 0
        note = f"{completed}/{planned or '?'} runs completed"
        pool = last_line(log, containing="gpu_pool:")
        if pool:
            note += f"; {pool}"
        if timed_out:
            return "timeout", note
        if rc == 0 and planned and completed == planned:
            return "ok", note
        return ("partial" if completed else "failed"), note + ("" if completed else "; " + last_line(log))

    def fit(self):
        sweep_dir, fit_dir = self.out / "sweep", self.out / "fit"
        base = [PY, "-m", "analysis", "fit", str(sweep_dir), "--out", str(fit_dir), "--bootstrap", "200"]
        rc, timed_out, log = self.run("fit", base)
        status = "ok"
        if rc not in (0, None) and not timed_out and "bracketed minimum" in (log.read_text()):
            # Too few budgets with a minimum inside their sizes: fit the edge budgets too, and say so.
            rc, timed_out, log = self.run("fit", [*base, "--include-edge"])
            status = "partial"
        if timed_out:
            return "timeout", last_line(log)
        fit_json = fit_dir / "fit.json"
        if rc != 0 or not fit_json.is_file():
            return "failed", last_line(log)
        note = fit_note(json.loads(fit_json.read_text()))
        return status, (note + "; edge budgets included (--include-edge)" if status == "partial" else note)


def sweep_runs(sweep_dir: Path) -> list[dict]:
    """One record per run directory with a result.json: the plan's point, times and loss."""
    runs = []
    for result_path in sorted((sweep_dir / "runs").glob("*/result.json")):
        try:
            r = json.loads(result_path.read_text())
        except ValueError:
            continue
        flops = (r.get("flops") or {}).get("6N+attn")
        train_s = r.get("train_wall_s") or 0
        runs.append({"run": result_path.parent.name, "status": r.get("status"), "budget": r.get("budget_flops"),
                     "params": (r.get("params") or {}).get("total"), "steps": r.get("steps"),
                     "tokens": r.get("tokens"), "wall_s": r.get("wall_s"), "train_wall_s": train_s,
                     "tokens_per_s": r["tokens"] / train_s if train_s and r.get("tokens") else None,
                     "flops_6N_attn": flops, "val_loss": r.get("final_val_loss")})
    return runs


def fit_note(fit: dict) -> str:
    """Approach 2's exponents from fit.json (N_opt ∝ C^a, D_opt ∝ C^b), and Approach 1's a if fitted."""
    def ci(key):
        low_high = fit.get(key) or []
        return f" [{low_high[0]:.3f}, {low_high[1]:.3f}]" if len(low_high) == 2 and None not in low_high else ""
    if not isinstance(fit.get("a"), (int, float)):
        return "fit.json written"
    note = f"Approach 2: a = {fit['a']:.3f}{ci('a_ci')}, b = {fit['b']:.3f}{ci('b_ci')} (N_opt ∝ C^a)"
    approach1 = fit.get("approach1")
    if isinstance(approach1, dict) and isinstance(approach1.get("a"), (int, float)):
        note += f"; Approach 1: a = {approach1['a']:.3f}"
    return note


# ---------------------------------------------------------------------------------------------
# The summary

def fmt(value, spec: str = "", dash: str = "-") -> str:
    if value is None:
        return dash
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def summary_markdown(header: dict, steps: list[dict], out: Path) -> str:
    lines = [f"# GPU check ({header['mode']} mode)", "",
             f"{header['date']}; device: {header['device']}; torch {header['torch']}; Python {header['python']}; "
             f"host {header['host']}", "", f"Command: `{header['command']}`", "",
             "| step | status | seconds | note |", "|---|---|---|---|"]
    for s in steps:
        lines.append(f"| {s['step']} | {s['status']} | {s['seconds']:.0f} | {s['note'].replace('|', '/')} |")
    bench = sorted((r for r in read_jsonl(out / "bench.jsonl") if not r.get("summary")),
                   key=lambda r: r.get("params", float("inf")))
    if bench:
        lines += ["", "## MFU and tokens/s (scripts/bench.py)", "",
                  "| size | params | shape | seq x batch | ours tok/s | HF tok/s | ours/HF | MFU | first step s | "
                  "flash SDPA |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in bench:
            if "error" in r:
                lines.append(f"| {r['size']} | | | {r.get('seq_len')} x {r.get('batch')} | {r['error']} | | | | | |")
                continue
            lines.append(f"| {r['size']} | {r['params']:,} | {r['shape']} | {r['seq_len']} x {r['batch']} | "
                         f"{r['ours_tokens_per_s']:,.0f} | {fmt(r.get('hf_tokens_per_s'), ',.0f')} | "
                         f"{fmt(r.get('ratio'), '.2f')} | {fmt(r.get('mfu'), '.1%')} | {r['first_step_s']:.2f} | "
                         f"{fmt(r.get('flash_sdpa'))} |")
    memory = read_jsonl(out / "memory.jsonl")
    if memory:
        lines += ["", "## Peak memory: measured and estimated (scripts/memory_check.py)", "",
                  f"Measured: {memory[0]['measured_kind']}; estimate: {memory[0].get('estimate_source')}.", "",
                  "| size | params | seq x batch | precision | measured GiB | estimated GiB | estimate / measured - 1 |",
                  "|---|---|---|---|---|---|---|"]
        for r in memory:
            lines.append(f"| {r['size']} | {r['params']:,} | {r['seq_len']} x {r['batch']} | {r['precision']} | "
                         f"{r['measured_gb']:.3f} | {fmt(r.get('estimate_gb'), '.3f')} | {fmt(r.get('error'), '+.1%')} |")
    runs = sweep_runs(out / "sweep")
    if runs:
        lines += ["", "## Sweep (sweep/results.csv, sweep/plan.txt)", "",
                  "| run | status | budget | params | steps | tokens | wall s | train s | tok/s | val loss |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in runs:
            lines.append(f"| {r['run']} | {r['status']} | {fmt(r['budget'], '.3g')} | {fmt(r['params'], ',')} | "
                         f"{fmt(r['steps'])} | {fmt(r['tokens'], ',')} | {fmt(r['wall_s'], '.1f')} | "
                         f"{fmt(r['train_wall_s'], '.1f')} | {fmt(r['tokens_per_s'], ',.0f')} | "
                         f"{fmt(r['val_loss'], '.4f')} |")
        sweep_s = next((s["seconds"] for s in steps if s["step"] == "sweep"), None)
        flops = sum(r["flops_6N_attn"] or 0 for r in runs if r["status"] == "completed")
        if sweep_s:
            lines += ["", f"Sweep command: {sweep_s:.0f} s for {flops:.3g} training FLOPs (6N+attn), "
                          f"{flops / sweep_s / 1e12:.3g} TFLOP/s over the whole command."]
    if (out / "fit" / "fit.json").is_file():
        lines += ["", "## Fit", "", "fit/fit.json, fit/report.md; " +
                  next((s["note"] for s in steps if s["step"] == "fit"), "")]
    return "\n".join(lines) + "\n"


PROBE = """
import json, torch
cuda = torch.cuda.is_available()
print(json.dumps({"torch": torch.__version__, "cuda": cuda, "cuda_version": torch.version.cuda,
                  "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []}))
"""


def probe_torch(env: dict) -> dict:
    """torch's version and the GPUs it sees, from a child process (this one never starts CUDA)."""
    try:
        proc = subprocess.run([PY, "-c", PROBE], capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    except (OSError, subprocess.SubprocessError) as error:
        return {"torch": None, "error": str(error)}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"torch": None, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}


def device_description(mode: str, probe: dict) -> str:
    if mode == "cpu":
        return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip()
            if out:
                return "; ".join(out.splitlines()) + f"; CUDA {probe.get('cuda_version')}"
        except (OSError, subprocess.SubprocessError):
            pass
    return ", ".join(probe.get("gpus") or ["no GPU"])


def write_tarball(out: Path) -> None:
    def keep(info: tarfile.TarInfo):
        parts = Path(info.name).parts
        if "checkpoints" in parts or parts[-1] == TARBALL or (info.isfile() and info.size > TAR_MAX_FILE_BYTES):
            return None
        return info
    tmp = out / (TARBALL + ".part")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(out, arcname=out.name, filter=keep)
    tmp.replace(out / TARBALL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--out", required=True, help="the folder everything is written to")
    parser.add_argument("--steps", default=",".join(STEP_NAMES),
                        help="comma-separated subset of " + ",".join(STEP_NAMES))
    parser.add_argument("--sweep-override", action="append", default=[], metavar="KEY=VALUE",
                        help="one more override for the sweep step (repeatable)")
    parser.add_argument("--time-box", action="append", default=[], metavar="STEP=SECONDS",
                        help="another time box for a step (repeatable), e.g. sweep=300")
    parser.add_argument("--setup-status", default="ok")
    parser.add_argument("--setup-note", default="")
    parser.add_argument("--setup-seconds", type=float, default=0.0)
    parser.add_argument("--command", default=None, help="the command line to record in the summary")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STEP_NAMES]
    if unknown:
        print(f"error: --steps: unknown step {unknown[0]!r}; choose from {', '.join(STEP_NAMES)}", file=sys.stderr)
        return 2
    boxes = {}
    for item in args.time_box:
        step, _, seconds = item.partition("=")
        try:
            boxes[step] = float(seconds)
        except ValueError:
            boxes[step] = -1.0
        if step not in STEP_NAMES or boxes[step] <= 0:
            print(f"error: --time-box: expected STEP=SECONDS with STEP one of {', '.join(STEP_NAMES)} and SECONDS > 0, "
                  f"got {item!r}", file=sys.stderr)
            return 2
    out = Path(args.out).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    check = Check(args.mode, out, args.sweep_override)
    check.cfg = check.cfg | {"timeouts": check.cfg["timeouts"] | boxes}
    probe = probe_torch(check.env)
    if probe.get("torch") is None:
        print(f"error: torch does not import with {PY}: {probe.get('error')}", file=sys.stderr)
        return 2
    if args.mode == "gpu" and not probe["cuda"]:
        print("error: --mode gpu: torch sees no CUDA device here; run `scripts/gpu_check.sh --cpu` for the CPU mode",
              file=sys.stderr)
        return 2
    header = {"mode": args.mode, "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "device": device_description(args.mode, probe), "torch": probe["torch"],
              "python": platform.python_version(), "host": platform.node(),
              "command": args.command or " ".join([Path(PY).name, *sys.argv])}
    steps = [{"step": "setup", "status": args.setup_status, "seconds": args.setup_seconds,
              "note": args.setup_note or "imports present"}]
    steps_path = out / "steps.jsonl"
    steps_path.write_text(json.dumps(steps[0]) + "\n")
    say(f"{args.mode} mode into {out}: steps {', '.join(chosen)}; device {header['device']}")
    for name in STEP_NAMES:
        if name not in chosen:
            continue
        say(f"step {name}: started (time box {check.cfg['timeouts'][name]}s)")
        started = time.perf_counter()
        try:
            status, note = getattr(check, name)()
        except Exception as error:  # a bug in the check itself: record it, go on
            status, note = "failed", f"gpu_check: {type(error).__name__}: {error}"
        record = {"step": name, "status": status, "seconds": round(time.perf_counter() - started, 1), "note": note,
                  "log": f"logs/{name}.log"}
        steps.append(record)
        with open(steps_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        say(f"step {name}: {status} in {record['seconds']:.0f}s; {note}")
    summary = summary_markdown(header, steps, out)
    (out / "summary.md").write_text(summary)
    (out / "summary.json").write_text(json.dumps({"header": header, "steps": steps}, indent=1) + "\n")
    write_tarball(out)
    print(summary, flush=True)
    say(f"everything is in {out} (and {out / TARBALL})")
    return 0 if all(s["status"] in ("ok", "skipped") for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
