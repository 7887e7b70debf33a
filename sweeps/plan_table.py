"""The plan before the spend: one row per (C, N) run, with estimated time, totals and warnings."""
from __future__ import annotations

from sweeps.estimate import Throughput, format_seconds
from sweeps.grid import GridPoint


def plan_rows(points: list[GridPoint], throughput: Throughput, states: dict[str, str]) -> list[dict]:
    rows = []
    for point in points:
        plan = point.plan
        rows.append({
            "budget": point.budget, "params": plan.params.total, "run_id": plan.run_id,
            "shape": f"{plan.shape.n_layer}x{plan.shape.d_model}", "tokens": plan.budget.tokens,
            "tokens_per_param": plan.budget.tokens / plan.params.total, "steps": plan.budget.steps,
            "batch_tokens": plan.budget.batch_tokens, "batch_seqs": plan.budget.batch_seqs,
            "micro_batch_seqs": plan.micro_batch_seqs, "grad_accum_steps": plan.grad_accum_steps,
            "world_size": plan.world_size, "est_peak_memory_gb": plan.est_peak_memory_gb, "lr": plan.lr, "est_s": throughput.for_plan(plan),
            "state": states.get(plan.run_id, "new"),
        })
    return rows


def format_table(rows: list[dict]) -> str:
    # micro: sequences per forward pass x accumulation steps (x ranks when more than one) = batch
    header = f"{'budget C':>9} {'params N':>9} {'shape':>8} {'tokens D':>10} {'D/N':>7} {'steps':>6} " \
             f"{'batch':>7} {'micro':>9} {'mem GB':>6} {'lr':>8} {'est.':>7}  state"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['budget']:>9.3g} {r['params']:>9.3g} {r['shape']:>8} {r['tokens']:>10.3g} "
                     f"{r['tokens_per_param']:>7.3g} {r['steps']:>6} {r['batch_tokens']:>7} {_micro(r):>9} "
                     f"{r['est_peak_memory_gb']:>6.3g} {r['lr']:>8.2e} "
                     f"{format_seconds(r['est_s']):>7}  {r['state']}")
    todo = [r for r in rows if r["state"] not in ("completed", "diverged")]
    total = sum(r["est_s"] for r in rows)
    remaining = sum(r["est_s"] for r in todo)
    lines.append("-" * len(header))
    lines.append(f"{len(rows)} runs over {len({r['budget'] for r in rows})} budgets; estimated training time "
                 f"{format_seconds(total)} in all, {format_seconds(remaining)} for the {len(todo)} still to run")
    return "\n".join(lines)


def _micro(row: dict) -> str:
    """micro-batch x accumulation steps (x world size when above 1), e.g. 8x24 or 8x3x8."""
    text = f"{row['micro_batch_seqs']}x{row['grad_accum_steps']}"
    return text + (f"x{row['world_size']}" if row["world_size"] > 1 else "")


def plan_warnings(rows: list[dict], unique_tokens: int | None, min_steps: int) -> list[str]:
    warnings = []
    for r in rows:
        where = f"C={r['budget']:.3g} N={r['params']:.3g}"
        if unique_tokens is not None and r["tokens"] > unique_tokens:
            warnings.append(f"{where}: needs {r['tokens']:,} tokens, more than the corpus's {unique_tokens:,} "
                            f"unique training tokens ({r['tokens'] / unique_tokens:.2f} epochs): data repeats")
        if r["steps"] < 2 * min_steps:
            warnings.append(f"{where}: only {r['steps']} optimizer steps (minimum {min_steps})")
    return warnings
