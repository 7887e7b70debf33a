"""Model shapes: a named catalog (70M-1B) and a rule that turns any parameter target into a shape.

Pure Python (no torch), so the sweep planner and the analysis can use it without building a model.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from train.plan.errors import ShapeError
from train.plan.params import count_params

# GPT-2's 50,257-token BPE padded to a multiple of 64 so the vocabulary matmuls tile well.
GPT2_PADDED_VOCAB = 50304
CATALOG_SEQ_LEN = 2048




@dataclass(frozen=True)
class ModelShape:
    n_layer: int
    d_model: int
    n_head: int
    head_dim: int
    d_ff: int
    vocab_size: int
    seq_len: int
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        for field in ("n_layer", "d_model", "n_head", "head_dim", "d_ff", "vocab_size", "seq_len"):
            value = getattr(self, field)
            if not isinstance(value, int) or value <= 0:
                raise ShapeError(f"model.{field}: must be a positive integer, got {value!r}")
        if self.n_head * self.head_dim != self.d_model:
            raise ShapeError(
                f"model.head_dim: n_head ({self.n_head}) x head_dim ({self.head_dim}) "
                f"must equal d_model ({self.d_model})"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def pad_vocab(vocab_size: int, multiple: int = 64) -> int:
    """Round the vocabulary up so the embedding and head matmuls use tensor-core-friendly sizes."""
    if vocab_size <= 0:
        raise ShapeError(f"data.vocab_size: must be positive, got {vocab_size}")
    return -(-vocab_size // multiple) * multiple


def head_dim_for(d_model: int) -> int:
    """Head size by width: Chinchilla uses 64 up to ~300M params (d_model 1024) and 128 above.

    Tiny CPU models get 32, 16 or 8 so that they still have several heads and can be narrow
    enough to sit below their embedding's size.
    """
    if d_model >= 1280:
        return 128
    if d_model >= 256:
        return 64
    if d_model >= 64:
        return 32
    if d_model >= 32:
        return 16
    return 8


def swiglu_hidden(d_model: int) -> int:
    """SwiGLU width: 8/3 * d_model (same params as a 4x GELU MLP), rounded up for alignment."""
    multiple = 256 if d_model >= 1024 else 64 if d_model >= 256 else 16
    return -(-(8 * d_model) // (3 * multiple)) * multiple


def shape_from_width_depth(d_model: int, n_layer: int, vocab_size: int, seq_len: int,
                           tie_embeddings: bool = False) -> ModelShape:
    head_dim = head_dim_for(d_model)
    if d_model % head_dim:
        raise ShapeError(f"model.d_model: {d_model} is not a multiple of head_dim {head_dim}")
    return ModelShape(n_layer=n_layer, d_model=d_model, n_head=d_model // head_dim, head_dim=head_dim,
                      d_ff=swiglu_hidden(d_model), vocab_size=vocab_size, seq_len=seq_len,
                      tie_embeddings=tie_embeddings)


def _candidate_widths(max_width: int = 4096):
    # Steps of one head: every width is a multiple of the head size head_dim_for() gives it.
    width = 8
    while width <= max_width:
        yield width
        width += head_dim_for(width)


# Every candidate width with its parameters per layer (attention 4d², SwiGLU 3d·d_ff, two norms).
_WIDTHS = [(d, 4 * d * d + 3 * d * swiglu_hidden(d) + 2 * d) for d in _candidate_widths()]

# No deep stacks of very narrow layers: at tiny sizes they train markedly worse than a wider,
# shallower model of the same count (7 layers of width 8 lost to 1 of width 24 with 50% more
# parameters on the demo's data), which would put bumps into IsoFLOP curves.
MIN_ASPECT_RATIO = 8

# The shape rule keeps this fraction of the parameter target as slack before preferring the
# aspect ratio; 10% keeps IsoFLOP grids (1.3x or more apart) strictly ordered while leaving tiny
# models, whose widths step coarsely, room for a sensible depth.
PARAM_TOLERANCE = 0.10
MAX_RULE_MISS = 0.25


def shape_from_params(target: float, vocab_size: int, seq_len: int, tie_embeddings: bool = False,
                      aspect_ratio: float = 64.0, max_layers: int = 48) -> ModelShape:
    """The shape rule: a model of about `target` total parameters.

    Among all (depth, width) pairs whose total parameter count lies within 10% of the target,
    take the one whose aspect ratio d_model / n_layer is closest (in log) to `aspect_ratio`
    (never below MIN_ASPECT_RATIO).
    64 is the ratio of Chinchilla's small models (640/10, 1024/16) and sits inside Kaplan et al.'s
    flat optimum (roughly 20-200). If no pair lands within 10%, take the closest count, and refuse
    when even that misses the target by more than 25% (e.g. a target below the embedding alone).
    """
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise ShapeError(f"model.params: must be a positive finite number, got {target!r}")
    if aspect_ratio <= 0:
        raise ShapeError(f"model.aspect_ratio: must be positive, got {aspect_ratio}")
    best_in_tolerance = None
    closest = None
    embedding_copies = 1 if tie_embeddings else 2
    for n_layer in range(1, max_layers + 1):
        for d_model, per_layer in _WIDTHS:
            if d_model < MIN_ASPECT_RATIO * n_layer:
                continue
            # count_params(shape_from_width_depth(d_model, n_layer, ...)).total, without building the shape
            total = n_layer * per_layer + d_model + embedding_copies * vocab_size * d_model
            miss = abs(math.log(total / target))
            aspect_miss = abs(math.log(d_model / n_layer / aspect_ratio))
            if closest is None or miss < closest[0]:
                closest = (miss, (d_model, n_layer))
            if miss <= math.log1p(PARAM_TOLERANCE):
                key = (aspect_miss, miss)
                if best_in_tolerance is None or key < best_in_tolerance[0]:
                    best_in_tolerance = (key, (d_model, n_layer))
    if best_in_tolerance is not None:
        return shape_from_width_depth(*best_in_tolerance[1], vocab_size, seq_len, tie_embeddings)
    miss, (d_model, n_layer) = closest
    shape = shape_from_width_depth(d_model, n_layer, vocab_size, seq_len, tie_embeddings)
    if miss > math.log1p(MAX_RULE_MISS):
        got = count_params(shape).total
        raise ShapeError(
            f"model.params: no shape reaches {target:.4g} parameters with vocab {vocab_size} "
            f"(closest: {got:.4g}; sizes between {smallest_params(vocab_size, seq_len, tie_embeddings):.4g} "
            f"and {largest_params(vocab_size, seq_len, tie_embeddings, max_layers):.4g} are reachable)"
        )
    return shape


def smallest_params(vocab_size: int, seq_len: int, tie_embeddings: bool = False) -> int:
    return count_params(shape_from_width_depth(8, 1, vocab_size, seq_len, tie_embeddings)).total


def largest_params(vocab_size: int, seq_len: int, tie_embeddings: bool = False, max_layers: int = 48) -> int:
    widths = list(_candidate_widths())
    return count_params(shape_from_width_depth(widths[-1], max_layers, vocab_size, seq_len, tie_embeddings)).total


def _catalog_entry(n_layer: int, d_model: int, head_dim: int) -> ModelShape:
    return ModelShape(n_layer=n_layer, d_model=d_model, n_head=d_model // head_dim, head_dim=head_dim,
                      d_ff=swiglu_hidden(d_model), vocab_size=GPT2_PADDED_VOCAB, seq_len=CATALOG_SEQ_LEN)


# Named shapes for GPU sweeps, in the spirit of Chinchilla's Table A9: widths step up as depth
# grows, heads of 64 up to ~300M and of 128 above. Names give the total parameter count (untied
# GPT-2 vocabulary), checked against count_params() in the tests.
CATALOG: dict[str, ModelShape] = {
    "llama-70m": _catalog_entry(6, 512, 64),
    "llama-90m": _catalog_entry(8, 576, 64),
    "llama-115m": _catalog_entry(10, 640, 64),
    "llama-160m": _catalog_entry(12, 768, 64),
    "llama-230m": _catalog_entry(14, 896, 64),
    "llama-310m": _catalog_entry(16, 1024, 64),
    "llama-410m": _catalog_entry(14, 1280, 128),
    "llama-490m": _catalog_entry(18, 1280, 128),
    "llama-620m": _catalog_entry(20, 1408, 128),
    "llama-780m": _catalog_entry(22, 1536, 128),
    "llama-1b": _catalog_entry(22, 1792, 128),
}


def catalog_shape(name: str, vocab_size: int | None = None, seq_len: int | None = None,
                  tie_embeddings: bool | None = None) -> ModelShape:
    if name not in CATALOG:
        raise ShapeError(f"model: unknown catalog name {name!r}; choose one of {', '.join(CATALOG)}")
    shape = CATALOG[name]
    changes = {}
    if vocab_size is not None:
        changes["vocab_size"] = vocab_size
    if seq_len is not None:
        changes["seq_len"] = seq_len
    if tie_embeddings is not None:
        changes["tie_embeddings"] = tie_embeddings
    return replace(shape, **changes)


def nearest_catalog_name(n_params: float, vocab_size: int = GPT2_PADDED_VOCAB,
                         tolerance: float = 0.15) -> str | None:
    """The catalog entry closest (in log) to n_params, or None if none lies within `tolerance`."""
    best = min(CATALOG, key=lambda name: abs(math.log(
        count_params(catalog_shape(name, vocab_size=vocab_size)).total / n_params)))
    got = count_params(catalog_shape(best, vocab_size=vocab_size)).total
    return best if abs(got / n_params - 1) <= tolerance else None
