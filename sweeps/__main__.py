"""`python -m sweeps sweep=<preset> [overrides]`: plan and run an IsoFLOP sweep through Hydra multirun.

    python -m sweeps sweep=demo dry_run=true        # the plan table, nothing trained
    python -m sweeps sweep=demo                     # train every missing run, sequentially
    python -m sweeps sweep=demo hydra/launcher=gpu_pool      # one run per free GPU
    python -m sweeps sweep=demo hydra/launcher=submitit_slurm  # a SLURM job array
    python -m sweeps refine <sweep dir> [dry_run=true]   # sizes beyond edge minima (sweeps/refine.py)

Every option is a Hydra override (key=value) of the typed config: train/config.py (TrainConfig,
each run's settings) and train/config.py (the `sweep` group). The main ones:

    sweep=<preset>               configs/sweep/: demo, cpu_own, chinchilla_a2, gpu_day
    sweep.out_dir=<dir>          the sweep directory (default sweeps_out/<name>); `out_dir=<dir>` is the same
    sweep.budgets=[1e11,4e11]    or sweep.budget_range.start/stop/count
    sweep.sizes_per_budget=5 sweep.span=4 sweep.tokens_per_param=80
    data=<preset> data.paths=[...]   configs/data/: embedded, text, parquet, ... (docs/data.md)
    dry_run=true                 print the plan table and train nothing
    retry_diverged=true          train runs that ended `diverged` again (failed runs are always retried)
    sweep.new_config=refuse|replace  a different config into an existing sweep directory (docs/sweeps.md)
    hydra/launcher=gpu_pool|submitit_slurm
    log_level=warning            console verbosity (debug|info|warning|error); runs keep train.log

Exit codes: 0 every run completed; 2 bad input (one `error:` line); 3 some runs failed or diverged.
"""
from __future__ import annotations

import sys
from pathlib import Path


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def slurm_problem() -> str | None:
    """Why submitit_slurm cannot submit from here, or None: no sbatch, or no controller answers."""
    import shutil
    import subprocess
    if shutil.which("sbatch") is None:
        return "no `sbatch` on PATH (not a SLURM login node)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`sinfo` did not answer ({error})"
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        return f"`sinfo` failed: {lines[-1].strip() if lines else f'exit code {proc.returncode}'}"
    return None


def top_level_out_dir(args: list[str]) -> list[str]:
    """`out_dir=X` on a sweep's command line is the sweep directory (sweep.out_dir=X): each run's
    own out_dir is set by the sweeper. Both, and different, is an error."""
    given = [a.split("=", 1)[1] for a in args if a.startswith("out_dir=")]
    if not given:
        return args
    swept = [a.split("=", 1)[1] for a in args if a.startswith("sweep.out_dir=")]
    if swept and Path(swept[-1]) != Path(given[-1]):
        fail(f"out_dir: {given[-1]} and sweep.out_dir={swept[-1]} disagree; a sweep has one directory, "
             "give sweep.out_dir only")
    return [a for a in args if not a.startswith(("out_dir=", "sweep.out_dir="))] + [f"sweep.out_dir={given[-1]}"]


def check_sweep_args(args: list[str]) -> None:
    """The mistakes Hydra would report in many lines (or not at all), as one line each."""
    chosen = [a.split("=", 1)[1] for a in args if a.startswith("sweep=")]
    if not chosen:
        fail("sweep: choose a preset, e.g. `python -m sweeps sweep=demo` (see configs/sweep/)")
    if chosen[-1] in ("none", "null"):
        fail("sweep: `none` is not a sweep; choose a preset, e.g. sweep=demo (see configs/sweep/)")
    # an unknown launcher, key or value is Hydra's to find: train/overrides.py composes the
    # command line with Hydra's own loader before anything runs
    for arg in args:
        if arg.startswith("hydra/launcher="):
            name = arg.split("=", 1)[1]
            if name == "submitit_slurm" and "dry_run=true" not in args:
                problem = slurm_problem()
                if problem:
                    fail(f"hydra/launcher=submitit_slurm: no SLURM cluster to submit to: {problem}; run on a "
                         "SLURM login node (SLURM_CONF set), or drop hydra/launcher to train here")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(__doc__.strip())
        return
    if args and args[0] == "refine":
        from sweeps.refine import refine_argv
        if len(args) < 2 or "=" in args[1]:
            fail("refine: usage: python -m sweeps refine <sweep dir> [dry_run=true] [overrides]")
        try:
            args = refine_argv(args[1], args[2:])
        except ValueError as error:
            fail(str(error))
    args = top_level_out_dir(args)
    check_sweep_args(args)
    if not any(a.startswith("hydra/sweeper=") for a in args):
        args.append("hydra/sweeper=isoflop")
    from train.overrides import hydra_flags_first
    sys.argv = [sys.argv[0], "--multirun", *hydra_flags_first(args)]
    from train.__main__ import main as train_main
    train_main()


if __name__ == "__main__":
    main()
