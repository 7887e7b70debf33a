"""`python -m sweeps sweep=<preset> [overrides]`: plan and run an IsoFLOP sweep through Hydra multirun.

    python -m sweeps sweep=demo dry_run=true        # the plan table, nothing trained
    python -m sweeps sweep=demo                     # train every missing run, sequentially
    python -m sweeps sweep=demo hydra/launcher=gpu_pool      # one run per free GPU
    python -m sweeps sweep=demo hydra/launcher=submitit_slurm  # a SLURM job array
    python -m sweeps refine <sweep dir> [dry_run=true]   # sizes beyond edge minima (sweeps/refine.py)
"""
from __future__ import annotations

import sys
from pathlib import Path


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def available_launchers() -> list[str]:
    """hydra/launcher options: those the installed Hydra plugins register, and any YAML of ours."""
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins
    Plugins.instance()  # imports every hydra_plugins module, which registers its configs
    try:
        names = {name.removesuffix(".yaml") for name in ConfigStore.instance().list("hydra/launcher")}
    except OSError:
        names = set()
    from train.__main__ import CONFIG_DIR
    names |= {p.stem for p in (Path(CONFIG_DIR) / "hydra" / "launcher").glob("*.yaml")}
    return sorted(names)


def check_sweep_args(args: list[str]) -> None:
    """The mistakes Hydra would report in many lines (or not at all), as one line each."""
    chosen = [a.split("=", 1)[1] for a in args if a.startswith("sweep=")]
    if not chosen:
        fail("sweep: choose a preset, e.g. `python -m sweeps sweep=demo` (see configs/sweep/)")
    if chosen[-1] in ("none", "null"):
        fail("sweep: `none` is not a sweep; choose a preset, e.g. sweep=demo (see configs/sweep/)")
    for arg in args:
        if arg.startswith("hydra/launcher="):
            name = arg.split("=", 1)[1]
            launchers = available_launchers()
            if name not in launchers:
                fail(f"hydra/launcher: unknown launcher {name!r}; choose one of {', '.join(launchers)}")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "refine":
        from sweeps.refine import refine_argv
        if len(args) < 2 or "=" in args[1]:
            fail("refine: usage: python -m sweeps refine <sweep dir> [dry_run=true] [overrides]")
        try:
            args = refine_argv(args[1], args[2:])
        except ValueError as error:
            fail(str(error))
    check_sweep_args(args)
    if not any(a.startswith("hydra/sweeper=") for a in args):
        args.append("hydra/sweeper=isoflop")
    sys.argv = [sys.argv[0], "--multirun", *args]
    from train.__main__ import main as train_main
    train_main()


if __name__ == "__main__":
    main()
