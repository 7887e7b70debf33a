"""Refinement: extend a budget's sizes beyond the edge of the grid where its minimum lies there.

An IsoFLOP minimum at the smallest or largest size of its budget is not bracketed: the parabola
fit cannot place it, and the analysis flags and drops it. Refinement reads the sweep's results
table and, for each such budget, plans `sweep.refine_sizes` more sizes beyond that edge at the
grid's own spacing. Running refinement again after those are trained extends further where the
minimum is still at the (new) edge.

    python -m sweeps refine <sweep dir> dry_run=true   # which sizes would be added
    python -m sweeps refine <sweep dir>                # and train them into the same directory

The subcommand replays the command that made the sweep (saved in <sweep dir>/command.json) with
`sweep.refine=true`; the sweeper does the rest (sweeps/sweeper.py).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

COMMAND_FILE = "command.json"
# Overrides that are not part of what a sweep is; refine sets or takes them afresh.
NOT_REPLAYED = ("dry_run", "sweep.refine", "sweep.out_dir", "hydra/sweeper", "hydra.mode")


@dataclass(frozen=True)
class Edge:
    budget: float
    side: str                   # "smallest" or "largest"
    edge_params: float          # the size with the lowest loss, at the edge
    loss: float
    targets: list[float] = field(default_factory=list)  # extra sizes beyond the edge, nearest first

    def describe(self) -> str:
        return (f"C={self.budget:.3g}: minimum at the {self.side} size N={self.edge_params:.3g} "
                f"(loss {self.loss:.4f})")


def same_budget(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6)


def find_edges(rows: list[dict], budgets: list[float], convention: str, ratio: float,
               count: int) -> tuple[list[Edge], list[str]]:
    """Budgets whose lowest loss is at the smallest or largest size, with `count` sizes beyond it.

    rows: results-table rows (numbers as floats). Only completed runs with a finite loss under the
    sweep's convention count. Returns the edges and notes on budgets that cannot be judged."""
    if count < 1:
        raise ValueError(f"sweep.refine_sizes: must be at least 1, got {count}")
    edges, notes = [], []
    for budget in budgets:
        points = sorted((r["params"], r["loss"]) for r in rows
                        if r.get("budget") is not None and same_budget(r["budget"], budget)
                        and r.get("status") == "completed" and r.get("convention", convention) == convention
                        and r.get("loss") is not None and math.isfinite(r["loss"]))
        if len(points) < 3:
            notes.append(f"C={budget:.3g}: {len(points)} completed sizes; refinement needs at least 3")
            continue
        best = min(range(len(points)), key=lambda i: points[i][1])
        if best == 0:
            edge_params, side, step = points[0][0], "smallest", 1 / ratio
        elif best == len(points) - 1:
            edge_params, side, step = points[-1][0], "largest", ratio
        else:
            continue
        edges.append(Edge(budget=budget, side=side, edge_params=edge_params, loss=points[best][1],
                          targets=[edge_params * step ** k for k in range(1, count + 1)]))
    return edges, notes


# --- the `python -m sweeps refine <sweep dir>` subcommand --------------------------------------

def save_command(sweep_dir: Path, overrides: list[str], hydra_overrides: list[str]) -> None:
    """Record the overrides that made this sweep, so that `refine` can replay them."""
    from train.run.rundir import atomic_write_json
    keep = [o for o in [*overrides, *hydra_overrides] if _key(o) not in NOT_REPLAYED]
    atomic_write_json(Path(sweep_dir) / COMMAND_FILE, {"overrides": keep})


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def refine_argv(sweep_dir: str, extra: list[str]) -> list[str]:
    """The sweep command line that refines `sweep_dir`: its saved overrides, then the caller's."""
    path = Path(sweep_dir) / COMMAND_FILE
    if not Path(sweep_dir).is_dir():
        raise ValueError(f"refine: no such sweep directory {sweep_dir}")
    if not path.is_file():
        raise ValueError(f"refine: {sweep_dir} has no {COMMAND_FILE}; refine a directory that "
                         "`python -m sweeps sweep=<preset>` has trained into")
    saved = json.loads(path.read_text())["overrides"]
    extra = [o for o in extra if _key(o) not in ("sweep.out_dir", "sweep.refine")]
    given = {_key(o) for o in extra}
    return [o for o in saved if _key(o) not in given] + list(extra) + [
        f"sweep.out_dir={sweep_dir}", "sweep.refine=true"]
