"""How close the plan table's time estimates come to the real runs on this machine.

    python scripts/calibrate_estimates.py [--out DIR] [--quick] [--json FILE]

Trains small sweeps with the default launcher (runs one after another in one process), then
compares each run's estimate (sweeps/estimate.py, as the plan table prints it) with its actual
time: from the run directory's config.yaml (written when the run starts, after the data is
prepared) to its result.json (written when it ends): model build, training, every evaluation and
the checkpoints. Three corpora and vocabularies and a range of depths and widths, so that each term of the
estimate is pinned down:

    demo       the embedded corpus, 320-token BPE, 3 budgets x 5 sizes (the README's main job)
    own        Python standard-library sources as text, 512-token BPE (sweep=cpu_own), 3 x 4
    vocab4k    the same sources, 4096-token BPE, 1 budget x 3 sizes
    wide       the embedded corpus, 1 budget x 3 sizes of d_model 64-96 (2e12 FLOPs)

--quick trains one budget of each. Prints a row per run (estimate, actual, ratio), then, over all
runs, the least-squares constants of the estimate's cost model (seconds per run, per token, per
token per layer, per token per vocabulary entry, per FLOP) that would put it on this machine: what
RUN_OVERHEAD_S, SECONDS_PER_TOKEN, SECONDS_PER_TOKEN_PER_LAYER, SECONDS_PER_TOKEN_PER_VOCAB and
EFFECTIVE_TFLOPS in sweeps/estimate.py hold for the CPU. Quiet machine wanted: on a shared one, other work lengthens the runs, not the estimates.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sweeps.estimate import throughput_for  # noqa: E402


def stdlib_corpus(folder: Path) -> Path:
    """About 3 MB of the running Python's standard-library sources, one file per document."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    folder.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(sorted(stdlib.glob("*.py"))[:150]):
        (folder / f"{i:04d}.txt").write_text(source.read_text(errors="replace"))
    return folder


def sweeps(out: Path, quick: bool) -> dict[str, list[str]]:
    corpus = stdlib_corpus(out / "corpus")
    own = ["data=text", f"data.paths=[{corpus}]", "data.sample_by=document", f"data.cache_dir={out / 'cache'}"]
    one_budget = ["sweep.budgets=[2e11]"] if quick else []
    return {
        "demo": ["sweep=demo", *one_budget],
        "own": ["sweep=cpu_own", *own, *one_budget],
        "vocab4k": ["sweep=cpu_own", *own, "data.vocab_size=4096", "sweep.budgets=[1e12]",
                    "sweep.sizes_per_budget=3"],
        # wider models (d_model 64-96), where the FLOPs, not the per-token costs, take most of the time
        "wide": ["sweep=demo", "sweep.budgets=[2e12]", "sweep.sizes_per_budget=3", "sweep.span=2",
                 "sweep.tokens_per_param=8"],
    }


def run_sweep(name: str, overrides: list[str], out: Path) -> tuple[Path, float]:
    sweep_dir = out / name
    command = [sys.executable, "-m", "sweeps", *overrides, f"sweep.out_dir={sweep_dir}", "wandb.mode=disabled"]
    # prepare the corpus first (a dry run does), so that the timed sweep trains only
    subprocess.run([*command, "dry_run=true"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    print(f"== {name}: {' '.join(command[1:])}", flush=True)
    started = time.time()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return sweep_dir, time.time() - started


def run_rows(name: str, sweep_dir: Path) -> list[dict]:
    throughput = throughput_for("cpu", None)
    rows = []
    for run_dir in sorted((sweep_dir / "runs").iterdir()):
        if not (run_dir / "result.json").is_file():  # still running (--keep on a sweep in progress)
            continue
        result = json.loads((run_dir / "result.json").read_text())
        if result["status"] != "completed":  # a diverged run stops early: its time is not its plan's
            continue
        plan = json.loads((run_dir / "plan.json").read_text())
        actual = (run_dir / "result.json").stat().st_mtime - (run_dir / "config.yaml").stat().st_mtime
        tokens = plan["budget"]["tokens"] if "budget" in plan else result["tokens"]
        flops = result["flops"]["6N+attn"]
        vocab, n_layer = result["shape"]["vocab_size"], result["shape"]["n_layer"]
        rows.append({"sweep": name, "run_id": result["run_id"], "params": result["params"]["total"],
                     "shape": f"{n_layer}x{result['shape']['d_model']}", "n_layer": n_layer, "vocab": vocab,
                     "tokens": tokens, "flops": flops, "status": result["status"],
                     "estimate_s": throughput.seconds(flops, tokens, n_layer, vocab), "actual_s": actual})
    return rows


def fit_constants(rows: list[dict]) -> dict[str, float]:
    """Non-negative least squares on the relative error (every run counts alike, whatever its
    length): actual ~ s0 + tokens * (t0 + tl * n_layer + tv * vocab) + flops / R."""
    import numpy as np
    from scipy.optimize import nnls
    design = np.array([[1.0, r["tokens"], r["tokens"] * r["n_layer"], r["tokens"] * r["vocab"], r["flops"]]
                       for r in rows])
    actual = np.array([r["actual_s"] for r in rows])
    solution, _ = nnls(design / actual[:, None], np.ones(len(rows)))
    s0, t0, tl, tv, per_flop = solution
    return {"run_overhead_s": s0, "seconds_per_token": t0, "seconds_per_token_per_layer": tl,
            "seconds_per_token_per_vocab": tv, "effective_tflops": 1 / per_flop / 1e12 if per_flop > 0 else float("inf")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/isoflop_calibration"))
    parser.add_argument("--quick", action="store_true", help="one budget per sweep")
    parser.add_argument("--json", type=Path, help="write the rows and the summary here")
    parser.add_argument("--keep", action="store_true", help="keep --out's finished runs (their times as measured then)")
    parser.add_argument("--only", nargs="+", metavar="SWEEP", help="train these sweeps; report every sweep in --out")
    args = parser.parse_args()
    if args.out.exists() and not args.keep:
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, totals, load_before = [], [], os.getloadavg()[0]
    for name, overrides in sweeps(args.out, args.quick).items():
        if args.only and name not in args.only:
            if (args.out / name / "runs").is_dir():
                rows += run_rows(name, args.out / name)
            continue
        sweep_dir, wall = run_sweep(name, overrides, args.out)
        these = run_rows(name, sweep_dir)
        rows += these
        totals.append({"sweep": name, "runs": len(these), "estimate_s": sum(r["estimate_s"] for r in these),
                       "actual_s": wall})
    print(f"\n{'sweep':>8} {'run':>13} {'params':>8} {'shape':>6} {'vocab':>6} {'tokens':>9} {'est. s':>7} "
          f"{'actual s':>8} {'actual/est':>10}")
    for r in rows:
        print(f"{r['sweep']:>8} {r['run_id']:>13} {r['params']:>8} {r['shape']:>6} {r['vocab']:>6} {r['tokens']:>9} "
              f"{r['estimate_s']:>7.1f} {r['actual_s']:>8.1f} {r['actual_s'] / r['estimate_s']:>10.2f}")
    print()
    for t in totals:
        print(f"{t['sweep']}: {t['runs']} runs, estimated {t['estimate_s']:.0f}s, the whole sweep took "
              f"{t['actual_s']:.0f}s (actual/est {t['actual_s'] / t['estimate_s']:.2f})")
    ratios = [r["actual_s"] / r["estimate_s"] for r in rows]
    worst = max(max(ratios), 1 / min(ratios))
    summary = {"date": time.strftime("%Y-%m-%d"), "cpu": _cpu_name(), "cores": os.cpu_count(),
               "load_before": load_before, "runs": len(rows), "ratio_min": min(ratios), "ratio_max": max(ratios),
               "worst_factor": worst, "fitted": fit_constants(rows), "totals": totals}
    print(f"per run actual/est: {min(ratios):.2f}-{max(ratios):.2f} (worst factor {worst:.2f}); "
          f"load average now {os.getloadavg()[0]:.2f}")
    print("least-squares constants for this machine: "
          + ", ".join(f"{k} = {v:.4g}" for k, v in summary["fitted"].items()))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
