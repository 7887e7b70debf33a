"""Parameter counts in closed form (no torch). Must equal sum(p.numel()) of train.model.Transformer."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ParamCount:
    total: int
    non_embedding: int  # Kaplan et al.: excludes the token embedding and the output head
    embedding: int      # token embedding + untied output head

    def to_dict(self) -> dict:
        return asdict(self)


def count_params(shape) -> ParamCount:
    """`shape`: a train.plan.shapes.ModelShape (anything with its fields)."""
    d, attn_width = shape.d_model, shape.n_head * shape.head_dim
    attention = 4 * d * attn_width       # q, k, v, o projections, no biases
    mlp = 3 * d * shape.d_ff             # SwiGLU: gate, up, down
    norms = 2 * d                        # RMSNorm weights before attention and before the MLP
    per_layer = attention + mlp + norms
    token_embedding = shape.vocab_size * d
    head = 0 if shape.tie_embeddings else shape.vocab_size * d
    non_embedding = shape.n_layer * per_layer + d  # + final RMSNorm
    embedding = token_embedding + head
    return ParamCount(total=non_embedding + embedding, non_embedding=non_embedding, embedding=embedding)
