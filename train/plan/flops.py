"""Training FLOPs per token under every convention (no torch).

Which convention counts as "compute" moves the fitted exponent a lot (Porian et al. 2024 moved
a from 0.84 to 0.71 by this choice alone), so every run records all of them and the analysis
can refit under any. All values are forward + backward FLOPs per training token.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from train.plan.errors import ConventionError
from train.plan.params import count_params

if TYPE_CHECKING:
    from train.plan.shapes import ModelShape

CONVENTIONS = ("6N", "6N_nonembed", "6N+attn", "chinchilla_exact")
DEFAULT_CONVENTION = "6N"

# Backward costs twice the forward (Kaplan et al. 2020, Sec. 2.1; Chinchilla App. F), so
# training = 3 x forward and a matmul with P weights costs 2P per token forward, 6P in total.
TRAIN_OVER_FORWARD = 3




def check_convention(name: str) -> str:
    if name not in CONVENTIONS:
        raise ConventionError(f"budget.convention: unknown convention {name!r}; choose one of {', '.join(CONVENTIONS)}")
    return name


def attention_flops_per_token(shape: "ModelShape") -> float:
    """12·L·d_attn·T: PaLM (Chowdhery et al. 2022, App. B), nanoGPT and Megatron.

    Per layer and token, QK^T and softmax@V each cost 2·T·d_attn forward over a context of T;
    x3 for training. Causal masking is not discounted, as in those sources.
    """
    return 12 * shape.n_layer * shape.n_head * shape.head_dim * shape.seq_len


def model_flops_per_token(shape: "ModelShape") -> float:
    """The FLOPs a training step does per token, as MFU counts them (not a budget convention).

    6 x the weights of every matmul: q|k|v, o, gate|up and down in each layer, and the output
    head (the embedding matrix when tied, counted once). The token embedding is a lookup, no
    FLOPs; norms, rotary, SiLU and softmax are elementwise and left out, as in every MFU figure.
    Attention's two matmuls cost 12·L·d_attn·T at the full T x T context: the causal mask is not
    discounted, as in PaLM's MFU (Chowdhery et al. 2022, App. B), Megatron and torch's
    FlopCounterMode. FlashAttention-style kernels skip the fully masked blocks, so they compute
    about half of that term; docs/performance.md ("Which FLOPs MFU counts") gives the sizes.
    """
    attn_width = shape.n_head * shape.head_dim
    matmul_weights = shape.n_layer * (4 * shape.d_model * attn_width + 3 * shape.d_model * shape.d_ff)
    matmul_weights += shape.vocab_size * shape.d_model  # the output head
    return 6.0 * matmul_weights + attention_flops_per_token(shape)


def chinchilla_forward_flops_per_sequence(seq_len: int, vocab_size: int, d_model: int, n_layer: int,
                                          head_dim: int, n_head: int, d_ff: int, mlp_matrices: int) -> float:
    """Forward FLOPs for one sequence, term by term from Hoffmann et al. 2022, Appendix F.

    `mlp_matrices` is 2 for the paper's dense block and 3 for our SwiGLU block (gate, up, down):
    Appendix F's term is 2·s·(2·d·ffw), i.e. 2 FLOPs per weight of each d x ffw matrix.
    """
    s, d, kh = seq_len, d_model, head_dim * n_head
    embeddings = 2 * s * vocab_size * d
    qkv = 2 * 3 * s * d * kh
    logits = 2 * s * s * kh
    softmax = 3 * n_head * s * s
    softmax_values = 2 * s * s * kh
    out_projection = 2 * s * kh * d
    dense = 2 * s * (mlp_matrices * d * d_ff)
    per_layer = qkv + logits + softmax + softmax_values + out_projection + dense
    final_logits = 2 * s * d * vocab_size
    return embeddings + n_layer * per_layer + final_logits


def flops_per_token(shape: "ModelShape") -> dict[str, float]:
    params = count_params(shape)
    chinchilla_forward = chinchilla_forward_flops_per_sequence(
        shape.seq_len, shape.vocab_size, shape.d_model, shape.n_layer, shape.head_dim, shape.n_head,
        shape.d_ff, mlp_matrices=3)
    return {
        # Chinchilla's C ≈ 6ND with N = all parameters, embeddings and output layer included.
        "6N": 6.0 * params.total,
        # Kaplan et al. 2020: non-embedding parameters only.
        "6N_nonembed": 6.0 * params.non_embedding,
        "6N+attn": 6.0 * params.total + attention_flops_per_token(shape),
        "chinchilla_exact": TRAIN_OVER_FORWARD * chinchilla_forward / shape.seq_len,
    }
