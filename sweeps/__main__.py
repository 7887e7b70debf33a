"""`python -m sweeps sweep=<preset> [overrides]`: plan and run an IsoFLOP sweep through Hydra multirun.

    python -m sweeps sweep=demo dry_run=true        # the plan table, nothing trained
    python -m sweeps sweep=demo                     # train every missing run, sequentially
    python -m sweeps sweep=demo hydra/launcher=gpu_pool      # one run per free GPU
    python -m sweeps sweep=demo hydra/launcher=submitit_slurm  # a SLURM job array
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not any(a.startswith("sweep=") for a in args):
        print("error: sweep: choose a preset, e.g. `python -m sweeps sweep=demo` (see configs/sweep/)",
              file=sys.stderr)
        sys.exit(2)
    if not any(a.startswith("hydra/sweeper=") for a in args):
        args.append("hydra/sweeper=isoflop")
    sys.argv = [sys.argv[0], "--multirun", *args]
    from train.__main__ import main as train_main
    train_main()


if __name__ == "__main__":
    main()
