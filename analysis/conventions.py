"""FLOP conventions the analysis can fit under, and how far a row's FLOPs may sit from 6·N·D.

The names match `result.json["flops"]` (../shared/DESIGN.md). A row is checked by the ratio
r = flops / (6 · params · tokens), where `params` is the N of that convention (all parameters, or
non-embedding ones for 6N_nonembed).
"""

CONVENTIONS = ("6N", "6N_nonembed", "6N+attn", "chinchilla_exact")

# Bounds on r = flops / (6·params·tokens):
# - 6N, 6N_nonembed are 6·N·D by definition; 10% leaves room for rounded, transcribed data
#   while catching an overflowed column (Gadre et al.'s C_6ND) and FLOPs off by 3x (Marin).
# - 6N+attn adds 12·L·d·T per token to 6N, so r >= 1; tiny models with long context reach a few x.
# - chinchilla_exact: Chinchilla Table A4 gives 0.99-1.10 for 73M-6.8B; it counts the input
#   embedding as a matmul, so tied-embedding tiny models go higher. 0.7 still catches r = 1/3.
RATIO_BOUNDS = {
    "6N": (0.9, 1.1),
    "6N_nonembed": (0.9, 1.1),
    "6N+attn": (0.95, 10.0),
    "chinchilla_exact": (0.7, 10.0),
}

# A nominal budget must be within this factor of the row's FLOPs (for run directories: of its
# FLOPs under the run's own convention, since another convention moves a tiny model's FLOPs far
# from the budget). Runs round to whole steps (a few %); a factor of 2 allows that and a CSV
# refitted under a nearby convention, and still catches a budget at 1/3 of the FLOPs (Marin).
BUDGET_RATIO_BOUNDS = (0.5, 2.0)


def params_key(convention: str) -> str:
    """Which `result.json["params"]` entry is N under `convention`."""
    return "non_embedding" if convention == "6N_nonembed" else "total"


def check_convention(name: str) -> str:
    from .errors import AnalysisError

    if name not in CONVENTIONS:
        raise AnalysisError(f"unknown FLOP convention {name!r}; choose one of {', '.join(CONVENTIONS)}")
    return name
