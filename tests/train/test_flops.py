import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from train.plan.flops import CONVENTIONS, attention_flops_per_token, flops_per_token, model_flops_per_token
from train.model import Transformer
from train.plan.params import count_params
from train.plan.shapes import CATALOG, ModelShape

SMALL_SHAPES = [
    ModelShape(n_layer=2, d_model=64, n_head=2, head_dim=32, d_ff=176, vocab_size=512, seq_len=64),
    ModelShape(n_layer=3, d_model=128, n_head=4, head_dim=32, d_ff=352, vocab_size=1000, seq_len=128,
               tie_embeddings=True),
    ModelShape(n_layer=1, d_model=96, n_head=3, head_dim=32, d_ff=256, vocab_size=300, seq_len=32),
]


def measured_train_flops_per_token(shape: ModelShape, dtype: torch.dtype = torch.float32) -> float:
    """Forward + backward FLOPs of one training step, counted by torch, per token. In bf16
    (CPU autocast) the model takes the standard ops rather than its hand-written fp32 CPU ones."""
    torch.manual_seed(0)
    model = Transformer(shape, attention="sdpa")
    batch = 2
    idx = torch.randint(0, shape.vocab_size, (batch, shape.seq_len))
    counter = FlopCounterMode(display=False)
    # The math backend decomposes attention into matmuls the counter sees on every platform
    # (torch's flop counter has no formula for SDPA's CPU flash kernel).
    with sdpa_kernel(SDPBackend.MATH), counter:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = model.loss(idx, idx)
        loss.backward()
    return counter.get_total_flops() / (batch * shape.seq_len)


@pytest.mark.parametrize("shape", SMALL_SHAPES)
def test_6n_plus_attn_matches_flop_counter(shape):
    """torch counts every matmul; it cannot see the embedding lookup (no matmul) nor elementwise
    ops (norms, softmax, SiLU). The output head is always a V x d matmul, even when tied to the
    embedding, where 6N counts that matrix only once."""
    params = count_params(shape)
    norm_weights = (2 * shape.n_layer + 1) * shape.d_model
    head_matmul = shape.vocab_size * shape.d_model
    attention = flops_per_token(shape)["6N+attn"] - flops_per_token(shape)["6N"]
    expected = 6 * (params.non_embedding - norm_weights + head_matmul) + attention
    measured = measured_train_flops_per_token(shape)
    # Tolerance: the loss's tiny elementwise terms; the matmul terms agree exactly.
    assert measured == pytest.approx(expected, rel=1e-3)
    # Untied, that is exactly 6N+attn less the lookup and the norms.
    if not shape.tie_embeddings:
        assert expected == flops_per_token(shape)["6N+attn"] - 6 * (head_matmul + norm_weights)


@pytest.mark.parametrize("shape", SMALL_SHAPES)
def test_chinchilla_exact_is_appendix_f_plus_unseen_terms(shape):
    """Appendix F counts the embedding as a matmul (2·V·d per token forward) and the softmax
    (3·h·s² per sequence forward); torch sees neither. Everything else must agree."""
    s, h = shape.seq_len, shape.n_head
    unseen = 3 * (2 * shape.vocab_size * shape.d_model + shape.n_layer * 3 * h * s)
    measured = measured_train_flops_per_token(shape)
    assert flops_per_token(shape)["chinchilla_exact"] - unseen == pytest.approx(measured, rel=1e-3)


def appendix_f_by_hand(shape: ModelShape) -> float:
    """Appendix F written out independently, for a SwiGLU block (three d x ffw matrices)."""
    s, V, d, L, ff = shape.seq_len, shape.vocab_size, shape.d_model, shape.n_layer, shape.d_ff
    kh, h = shape.n_head * shape.head_dim, shape.n_head
    forward = (2 * s * V * d
               + L * (6 * s * d * kh + 2 * s * s * kh + 3 * h * s * s + 2 * s * s * kh + 2 * s * kh * d + 2 * s * 3 * d * ff)
               + 2 * s * d * V)
    return 3 * forward / s


@pytest.mark.parametrize("name", ["llama-70m", "llama-410m", "llama-1b"])
def test_conventions_on_catalog(name):
    shape = CATALOG[name]
    fpt = flops_per_token(shape)
    assert set(fpt) == set(CONVENTIONS)
    params = count_params(shape)
    assert fpt["6N"] == 6 * params.total
    assert fpt["6N_nonembed"] == 6 * params.non_embedding
    assert fpt["6N+attn"] - fpt["6N"] == attention_flops_per_token(shape) == 12 * shape.n_layer * shape.d_model * shape.seq_len
    assert fpt["chinchilla_exact"] == pytest.approx(appendix_f_by_hand(shape), rel=1e-12)
    # At these sizes Appendix F lands within a few tens of percent of 6N (Chinchilla Table A4).
    assert 0.9 < fpt["chinchilla_exact"] / fpt["6N"] < 1.5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", SMALL_SHAPES)
def test_mfu_count_matches_flop_counter(shape, dtype):
    """MFU's numerator is what a step computes: FlopCounterMode's count within 2% (measured: equal
    to 1e-3, the gap being the loss's few elementwise terms), tied or untied, fp32 or bf16."""
    assert model_flops_per_token(shape) == pytest.approx(measured_train_flops_per_token(shape, dtype), rel=0.02)
    fpt = flops_per_token(shape)
    if not shape.tie_embeddings:  # 6N+attn counts the lookup as a matmul: MFU does not
        assert fpt["6N+attn"] - model_flops_per_token(shape) >= 6 * shape.vocab_size * shape.d_model


def test_mfu_count_leaves_out_the_embedding_lookup_at_scale():
    """On the untied catalog shapes 6N+attn overstates a step's FLOPs by the lookup's 6·V·d."""
    for name in ("llama-70m", "llama-1b"):
        shape = CATALOG[name]
        norms = (2 * shape.n_layer + 1) * shape.d_model
        lookup = shape.vocab_size * shape.d_model * (0 if shape.tie_embeddings else 1)
        assert flops_per_token(shape)["6N+attn"] - model_flops_per_token(shape) == 6 * (lookup + norms)
