"""The README's main job: an IsoFLOP sweep of tiny models on this CPU, then the Approach 2 fit.

    make demo            (sets up, then runs this)
    python scripts/demo.py [extra sweep overrides]

Re-running skips finished runs, so an interrupted demo picks up where it stopped.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SWEEP_DIR = REPO / "sweeps_out" / "demo"


def step(title: str, command: list[str]) -> None:
    print(f"\n== {title}: {' '.join(command)}", flush=True)
    code = subprocess.call(command, cwd=REPO)
    if code:
        sys.exit(f"demo: `{' '.join(command)}` failed with exit code {code}")


def main() -> None:
    started = time.time()
    python = sys.executable
    step("plan", [python, "-m", "sweeps", "sweep=demo", "dry_run=true", *sys.argv[1:]])
    step("sweep", [python, "-m", "sweeps", "sweep=demo", *sys.argv[1:]])
    step("fit", [python, "-m", "analysis", "fit", str(SWEEP_DIR), "--out", str(SWEEP_DIR / "fit")])
    print(f"\ndemo finished in {time.time() - started:.0f}s; report: {SWEEP_DIR / 'fit' / 'report.md'}")


if __name__ == "__main__":
    main()
