"""Synthetic IsoFLOP sweeps drawn from L(N, D) = E + A/N^α + B/D^β, for tests and examples.

The true exponents are a = β/(α+β) and b = α/(α+β) (C = 6ND). Noise is multiplicative:
L · exp(σ·ε), ε ~ N(0, 1).
"""

from __future__ import annotations

import csv
import json
import os

import numpy as np

# Hoffmann et al. 2022, Approach 3 (eq. 10)
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def true_exponents(law=CHINCHILLA):
    s = law["alpha"] + law["beta"]
    return law["beta"] / s, law["alpha"] / s


def true_optimum(C, law=CHINCHILLA):
    al, be = law["alpha"], law["beta"]
    G = (al * law["A"] / (be * law["B"])) ** (1 / (al + be))
    a, b = true_exponents(law)
    return G * (C / 6) ** a, (C / 6) ** b / G


def loss_law(N, D, law=CHINCHILLA):
    return law["E"] + law["A"] / N ** law["alpha"] + law["B"] / D ** law["beta"]


def isoflop_grid(
    budgets=(1e18, 3e18, 1e19, 3e19, 1e20, 3e20, 1e21),
    n_sizes: int = 9,
    span_dex: float = 0.8,
    noise: float = 0.005,
    seed: int = 0,
    law=CHINCHILLA,
    offset_dex: float = 0.0,
) -> dict:
    """Columns (flops, params, tokens, loss, budget): `n_sizes` sizes per budget, log-spaced over
    ±span_dex decades around the true optimum shifted by offset_dex."""
    rng = np.random.default_rng(seed)
    cols = {k: [] for k in ("flops", "params", "tokens", "loss", "budget")}
    for C in budgets:
        n0, _ = true_optimum(C, law)
        N = n0 * 10 ** (np.linspace(-span_dex, span_dex, n_sizes) + offset_dex)
        D = C / (6 * N)
        L = loss_law(N, D, law) * np.exp(noise * rng.standard_normal(len(N)))
        for k, v in zip(cols, (np.full(len(N), C), N, D, L, np.full(len(N), C))):
            cols[k].extend(np.asarray(v, dtype=float).tolist())
    return {k: np.array(v) for k, v in cols.items()}


def write_csv(cols: dict, path: str, columns=None) -> str:
    columns = columns or list(cols)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for row in zip(*(cols[c] for c in columns)):
            w.writerow([repr(float(v)) if isinstance(v, (float, np.floating)) else v for v in row])
    return path


def write_sweep(root: str, cols: dict, statuses=None, n_log: int = 40, seed: int = 0, law=CHINCHILLA,
                nonembed_frac: float = 0.8) -> list[str]:
    """Run directories as the trainer writes them (result.json + metrics.jsonl), one per row.

    The curve mid-run sits above the law by a schedule penalty that vanishes at the last token,
    like a cosine schedule that has not decayed yet. Non-embedding params are nonembed_frac·N."""
    rng = np.random.default_rng(seed)
    dirs = []
    for i, (C, N, D, L, budget) in enumerate(zip(cols["flops"], cols["params"], cols["tokens"], cols["loss"], cols["budget"])):
        status = statuses[i] if statuses is not None else "completed"
        run_id = f"syn{i:04d}"
        d = os.path.join(root, f"C{budget:.0e}", run_id)
        os.makedirs(d, exist_ok=True)
        ne = nonembed_frac * N
        result = {
            "status": status,
            "run_id": run_id,
            "seed": 0,
            "budget_flops": float(budget),
            "convention": "6N",
            "params": {"total": float(N), "non_embedding": float(ne)},
            "tokens": float(D),
            "flops": {"6N": 6 * N * D, "6N_nonembed": 6 * ne * D, "6N+attn": 6.3 * N * D, "chinchilla_exact": 6.1 * N * D},
            "final_val_loss": float(L) if status == "completed" else float("nan"),
            "final_train_loss": float(L) + 0.01,
            "wall_s": 1.0,
        }
        with open(os.path.join(d, "result.json"), "w") as f:
            json.dump(result, f)
        with open(os.path.join(d, "metrics.jsonl"), "w") as f:
            for step in range(1, n_log + 1):
                t = D * step / n_log
                frac = t / D
                val = loss_law(N, t, law) + 0.05 * (1 - frac) * frac + (L - loss_law(N, D, law))
                row = {"step": step * 10, "tokens": t, "flops": 6 * N * t, "lr": 1e-3, "tokens_per_s": 1e4,
                       "train_loss": float(val + 0.02 * rng.standard_normal())}
                if step % 4 == 0:
                    row["val_loss"] = float(val)
                f.write(json.dumps(row) + "\n")
        dirs.append(d)
    return dirs
