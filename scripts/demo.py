"""The README's main job: an IsoFLOP sweep of tiny models on this CPU, then the Approach 2 fit.

    make demo            (sets up, then runs this)
    python scripts/demo.py [extra sweep overrides]

Steps: the plan table; the sweep (3 budgets x 5 sizes); one refinement pass, which trains extra
sizes only where a budget's minimum landed at the edge of its grid; the fit. Re-running skips
finished runs, so an interrupted demo picks up where it stopped.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SWEEP_DIR = REPO / "sweeps_out" / "demo"
FIT_DIR = SWEEP_DIR / "fit"


def step(title: str, command: list[str]) -> None:
    print(f"\n== {title}: {' '.join(command)}", flush=True)
    code = subprocess.call(command, cwd=REPO)
    if code:
        sys.exit(f"demo: `{' '.join(command)}` failed with exit code {code}")


def interval(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "[n/a]"


def main() -> None:
    started = time.time()
    python = sys.executable
    overrides = sys.argv[1:]
    step("plan", [python, "-m", "sweeps", "sweep=demo", "dry_run=true", *overrides])
    step("sweep", [python, "-m", "sweeps", "sweep=demo", *overrides])
    step("refine edge minima", [python, "-m", "sweeps", "refine", str(SWEEP_DIR)])
    fit_command = [python, "-m", "analysis", "fit", str(SWEEP_DIR), "--out", str(FIT_DIR)]
    print(f"\n== fit: {' '.join(fit_command)}", flush=True)
    edge_included = False
    if subprocess.call(fit_command, cwd=REPO):
        # Tiny CPU models put some minima at the smallest buildable size (docs/sweeps.md). Fit
        # those budgets too rather than stop, and say loudly that the exponents are biased.
        edge_included = True
        step("fit including edge budgets", [*fit_command, "--include-edge"])
    fit = json.loads((FIT_DIR / "fit.json").read_text())
    figures = sorted(str(p.relative_to(REPO)) for p in FIT_DIR.glob("*.png"))
    print(f"\ndemo finished in {time.time() - started:.0f}s; report {FIT_DIR.relative_to(REPO) / 'report.md'}; "
          f"figures {', '.join(figures)}")
    print(f"Approach 2 ({fit['convention']}): N_opt ∝ C^a with a = {fit['a']:.3f} {interval(fit.get('a_ci'))}, "
          f"D_opt ∝ C^b with b = {fit['b']:.3f} {interval(fit.get('b_ci'))} (95% bootstrap)")
    edges = [b["budget"] for b in fit.get("budgets", []) if b.get("edge")]
    if edge_included or edges:
        print(f"warning: {len(edges)} budget(s) have their minimum at the edge of the grid "
              f"({', '.join(f'{c:.3g}' for c in edges)}); exponents fitted through them are biased")


if __name__ == "__main__":
    main()
