"""The results table in memory: one row per run, columns as numpy arrays (contract schema)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

REQUIRED = ("flops", "params", "tokens", "loss")
OPTIONAL = ("budget", "run_id", "status", "convention")


@dataclass
class Curve:
    """A run's training curve from metrics.jsonl: loss against tokens."""

    tokens: np.ndarray
    loss: np.ndarray
    source: str  # "val_loss" or "train_loss"


_DICTS = ("curves", "setups", "alt")


@dataclass
class Points:
    flops: np.ndarray
    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    budget: np.ndarray  # nominal budget; NaN where unknown
    budget_ref: np.ndarray  # FLOPs under the convention the budget was set in; NaN: same as flops
    status: np.ndarray  # str; "" where unknown (taken as completed)
    run_id: np.ndarray  # str; "" where unknown
    where: np.ndarray  # str: "file.csv:line" or the run directory, for messages
    curves: dict = field(default_factory=dict)  # run_id -> Curve (run directories only)
    setups: dict = field(default_factory=dict)  # run directory -> its setup (setup.read_setup) or None
    alt: dict = field(default_factory=dict)  # (convention, params key) -> (flops, params) arrays (run directories)

    def __len__(self) -> int:
        return len(self.flops)

    def subset(self, mask) -> "Points":
        kw = {f.name: getattr(self, f.name)[mask] for f in fields(self) if f.name not in _DICTS}
        alt = {k: (f[mask], n[mask]) for k, (f, n) in self.alt.items()}
        return Points(**kw, curves=self.curves, setups=self.setups, alt=alt)

    @staticmethod
    def concat(parts: list["Points"]) -> "Points":
        kw = {f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Points) if f.name not in _DICTS}
        curves, setups = {}, {}
        for p in parts:
            curves.update(p.curves)
            setups.update(p.setups)
        # other conventions' FLOPs and N only where every part has them (run directories)
        keys = set.intersection(*(set(p.alt) for p in parts)) if parts else set()
        alt = {k: tuple(np.concatenate([p.alt[k][i] for p in parts]) for i in (0, 1)) for k in keys}
        return Points(**kw, curves=curves, setups=setups, alt=alt)

    @staticmethod
    def from_columns(cols: dict, where: list[str], curves: dict | None = None) -> "Points":
        n = len(where)
        num = {k: np.array(cols.get(k, [np.nan] * n), dtype=float) for k in (*REQUIRED, "budget", "budget_ref")}
        txt = {k: np.array(cols.get(k, [""] * n), dtype=object) for k in ("status", "run_id")}
        return Points(**num, **txt, where=np.asarray(where, dtype=object), curves=curves or {})

    def label(self, i: int) -> str:
        rid = self.run_id[i]
        return f"{self.where[i]}" + (f" (run {rid})" if rid and rid not in str(self.where[i]) else "")
