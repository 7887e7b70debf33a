"""Llama-style decoder-only transformer: RMSNorm, rotary positions, SwiGLU, no biases.

Module names follow transformers' LlamaForCausalLM (model.layers.i.self_attn..., mlp...,
input_layernorm, ...) except for two fused projections: `self_attn.qkv_proj` holds q_proj, k_proj
and v_proj stacked by rows in that order, and `mlp.gate_up_proj` holds gate_proj and up_proj.
train.export splits them back; a state dict with the unfused names still loads. Built from a
train.plan.shapes.ModelShape.

Speed (docs/performance.md has the measurements). The math is Llama's; the ops are fewer. One
matmul for q, k and v and one for gate and up; rotary positions applied to the whole q|k|v block
with precomputed tables. On the CPU in fp32, where every op is a parallel region of its own,
hand-written autograd functions cut the op count further: RMSNorm, rotary, the whole SwiGLU MLP
(laid out so that its elementwise ops run on contiguous memory) with its residual add, the
attention output's residual add folded into its matmul (addmm), and the output head with the
cross-entropy computed from one softmax. Elsewhere (CUDA, autocast) the standard ops run, which
torch.compile fuses.
"""
from __future__ import annotations

import functools
import importlib.util
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from train.logs import get_logger
from train.plan.shapes import ModelShape

RMS_NORM_EPS = 1e-5
ROPE_THETA = 10000.0
INIT_STD = 0.02
ATTENTION_BACKENDS = ("auto", "sdpa", "flash_attn")


def flash_attn_problem(device: str = "cuda") -> str | None:
    """Why flash-attn cannot run here, or None when it does: the package imports and a tiny
    causal call works. A wheel built for another torch or CUDA imports with an undefined symbol,
    or fails at its first call; both are caught here rather than at the first forward."""
    if device == "cuda" and not torch.cuda.is_available():
        return "CUDA is not available"
    if importlib.util.find_spec("flash_attn") is None:
        return "the flash-attn package is not installed"
    try:
        from flash_attn import flash_attn_func
        q = torch.zeros(1, 8, 2, 64, device=device, dtype=torch.bfloat16)
        flash_attn_func(q, q, q, causal=True)
    except Exception as error:  # noqa: BLE001 - any failure (ImportError, OSError, RuntimeError) means: use SDPA
        return f"flash-attn does not work here ({type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]})"
    return None


@functools.lru_cache(maxsize=None)
def flash_attn_available() -> bool:
    """flash-attn works on this machine (checked once per process). When it is installed but
    broken, attention falls back to SDPA with a one-line note."""
    problem = flash_attn_problem()
    if problem and importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available():
        get_logger("run").warning(f"{problem}; attention uses SDPA")
    return problem is None


def _cpu_fp32(x: torch.Tensor) -> bool:
    """Whether the hand-written CPU functions below apply: measured on the CPU, in fp32, only."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")


# --- RMSNorm ---------------------------------------------------------------------------------

class _NormalizeFunction(torch.autograd.Function):
    """x * rsqrt(mean(x^2) + eps): RMSNorm without its weight."""

    @staticmethod
    def forward(ctx, x, eps):
        # mean(x^2) from one reduction (the 2-norm) rather than pow and mean
        rstd = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(x.shape[-1]).add_(eps).rsqrt_()
        normed = x * rstd
        ctx.save_for_backward(normed, rstd)
        return normed

    @staticmethod
    def backward(ctx, grad):
        normed, rstd = ctx.saved_tensors
        # d/dx of x * rstd(x), applied to g: rstd * (g - normed * mean(g * normed))
        mean = (grad * normed).mean(-1, keepdim=True)
        return torch.addcmul(grad, normed, mean, value=-1).mul_(rstd), None


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = RMS_NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """x * rsqrt(mean(x^2) + eps), the weight left to the caller (CPU fp32 only)."""
        return _NormalizeFunction.apply(x, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _cpu_fp32(x):
            return self.normalize(x) * self.weight
        # Normalise in fp32 for stability under bf16 autocast, as Llama does.
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


# --- rotary positions ------------------------------------------------------------------------

def rotary_tables(seq_len: int, head_dim: int, theta: float = ROPE_THETA) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the positions' angles, (seq_len, head_dim), in Llama's "rotate half" layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def qkv_rotary_tables(seq_len: int, head_dim: int, theta: float = ROPE_THETA) -> tuple[torch.Tensor, torch.Tensor]:
    """Tables (seq_len, 3, 1, head_dim) that rotate q and k of a q|k|v block and leave v as it is.

    Llama rotates x into x * cos + rotate_half(x) * sin with rotate_half(x) = [-x2, x1]. Here
    rotate_half's sign goes into the sin table, leaving a swap of the halves: x * cos +
    swap(x) * sin_signed. The v rows have cos 1 and sin 0, so that the whole q|k|v block is
    rotated at once, contiguously, and v comes out unchanged (v * 1 + swap(v) * 0 == v).
    """
    cos, sin = rotary_tables(seq_len, head_dim, theta)
    half = head_dim // 2
    sin_signed = torch.cat([-sin[:, :half], sin[:, half:]], dim=-1)
    cos3 = torch.stack([cos, cos, torch.ones_like(cos)], dim=1)[:, :, None]
    sin3 = torch.stack([sin_signed, sin_signed, torch.zeros_like(sin)], dim=1)[:, :, None]
    return cos3, sin3


def swap_halves(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([x[..., half:], x[..., :half]], dim=-1)


class _RotaryFunction(torch.autograd.Function):
    """x * cos + swap(x) * sin; swap is its own transpose, so the backward has the same form."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return torch.addcmul(swap_halves(x).mul_(sin), x, cos)

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        return torch.addcmul(swap_halves(grad * sin), grad, cos), None, None


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin, with the sign of rotate_half folded into sin_signed."""
    if _cpu_fp32(x):
        return _RotaryFunction.apply(x, cos, sin_signed)
    return (x * cos + swap_halves(x) * sin_signed).to(x.dtype)


# --- attention -------------------------------------------------------------------------------

def _fuse_legacy_weights(state_dict: dict, prefix: str, fused: str, parts: tuple[str, ...]) -> None:
    """Let a state dict with separate projections (from before the fusion) load: stack them."""
    names = [f"{prefix}{part}.weight" for part in parts]
    if all(name in state_dict for name in names):
        state_dict[f"{prefix}{fused}.weight"] = torch.cat([state_dict.pop(name) for name in names], dim=0)


class Attention(nn.Module):
    def __init__(self, shape: ModelShape, backend: str):
        super().__init__()
        self.n_head, self.head_dim = shape.n_head, shape.head_dim
        width = shape.n_head * shape.head_dim
        self.qkv_proj = nn.Linear(shape.d_model, 3 * width, bias=False)  # q_proj; k_proj; v_proj
        self.o_proj = nn.Linear(width, shape.d_model, bias=False)
        self.use_flash_attn = backend == "flash_attn" or (backend == "auto" and flash_attn_available())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _fuse_legacy_weights(state_dict, prefix, "qkv_proj", ("q_proj", "k_proj", "v_proj"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, residual: torch.Tensor,
                in_scale: torch.Tensor | None = None) -> torch.Tensor:
        """residual + attention(x * in_scale)."""
        batch, seq, _ = x.shape
        weight = self.qkv_proj.weight if in_scale is None else self.qkv_proj.weight * in_scale
        qkv = F.linear(x, weight).view(batch, seq, 3, self.n_head, self.head_dim)
        q, k, v = apply_rotary(qkv, cos, sin).unbind(2)
        if self.use_flash_attn and x.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
            from flash_attn import flash_attn_func
            out = flash_attn_func(q, k, v, causal=True)
        else:
            # SDPA dispatches to FlashAttention / memory-efficient kernels on CUDA, and to its
            # flash kernel on the CPU (faster there than the math path at these head sizes).
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 is_causal=True).transpose(1, 2)
        out = out.reshape(batch * seq, -1)
        if _cpu_fp32(residual):  # the residual add inside the matmul
            return torch.addmm(residual.view(batch * seq, -1), out, self.o_proj.weight.t()).view(residual.shape)
        return residual + self.o_proj(out).view(residual.shape)


# --- SwiGLU ----------------------------------------------------------------------------------

class _SwiGLUFunction(torch.autograd.Function):
    """residual + down(silu(gate(x)) * up(x)), from the stacked [gate; up] weight.

    The hidden activations are computed transposed, (d_ff, tokens), so that gate and up are two
    contiguous blocks of one matmul's output and every elementwise op, forward and backward, runs
    on contiguous memory; the matmuls take the transposes for free. The same six matmuls as
    three nn.Linear layers' forward and backward.
    """

    @staticmethod
    def forward(ctx, residual, x, gate_up_weight, down_weight):
        x2d = x.reshape(-1, x.shape[-1])
        gate, up = torch.mm(gate_up_weight, x2d.t()).chunk(2)  # (d_ff, tokens) each, contiguous
        activated = F.silu(gate)
        hidden = activated * up
        out = torch.addmm(residual.reshape(-1, residual.shape[-1]), hidden.t(), down_weight.t())
        ctx.save_for_backward(x2d, gate, up, activated, hidden, gate_up_weight, down_weight)
        return out.view(residual.shape)

    @staticmethod
    def backward(ctx, grad):
        x2d, gate, up, activated, hidden, gate_up_weight, down_weight = ctx.saved_tensors
        grad2d = grad.reshape(-1, grad.shape[-1])
        grad_hidden = torch.mm(down_weight.t(), grad2d.t())  # (d_ff, tokens)
        grad_gate_up = gate.new_empty((2 * gate.shape[0], gate.shape[1]))
        grad_gate, grad_up = grad_gate_up.chunk(2)
        torch.mul(grad_hidden, activated, out=grad_up)
        torch.ops.aten.silu_backward.grad_input(grad_hidden.mul_(up), gate, grad_input=grad_gate)
        grad_x = grad_gate_up_weight = grad_down_weight = None
        if ctx.needs_input_grad[1]:
            grad_x = torch.mm(grad_gate_up.t(), gate_up_weight).view(*grad.shape[:-1], x2d.shape[-1])
        if ctx.needs_input_grad[2]:
            grad_gate_up_weight = torch.mm(grad_gate_up, x2d)
        if ctx.needs_input_grad[3]:
            grad_down_weight = torch.mm(grad2d.t(), hidden.t())
        return grad, grad_x, grad_gate_up_weight, grad_down_weight


class SwiGLU(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.gate_up_proj = nn.Linear(shape.d_model, 2 * shape.d_ff, bias=False)  # gate_proj; up_proj
        self.down_proj = nn.Linear(shape.d_ff, shape.d_model, bias=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        _fuse_legacy_weights(state_dict, prefix, "gate_up_proj", ("gate_proj", "up_proj"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor, residual: torch.Tensor, in_scale: torch.Tensor | None = None) -> torch.Tensor:
        """residual + mlp(x * in_scale)."""
        weight = self.gate_up_proj.weight if in_scale is None else self.gate_up_proj.weight * in_scale
        if _cpu_fp32(x):
            return _SwiGLUFunction.apply(residual, x, weight, self.down_proj.weight)
        gate, up = F.linear(x, weight).chunk(2, dim=-1)
        return residual + self.down_proj(F.silu(gate) * up)


# --- output head and loss --------------------------------------------------------------------

def _softmax_cross_entropy(hidden, weight, targets, with_grads: bool):
    """Mean cross-entropy of logits = hidden @ weight.T, and optionally its gradients.

    One softmax, no log_softmax: the log-sum-exp of a row is its max logit less the log of its
    largest probability (exp(0) / sum). The gradient of the logits, (softmax - onehot) / n, is never
    formed: its 1/n and the one-hot part go onto the (tokens x d) and (vocab x d) gradients,
    through addmm's beta. The matmuls are the same three as F.linear + F.cross_entropy's.
    """
    n = hidden.shape[0]
    logits = torch.mm(hidden, weight.t())
    target_logits = logits.gather(1, targets[:, None])
    row_max = logits.amax(1, keepdim=True)
    probs = torch.softmax(logits, dim=1)
    del logits
    log_sum_exp = row_max - probs.amax(1, keepdim=True).log_()
    loss = (log_sum_exp - target_logits).sum() / n
    if not with_grads:
        return loss, None, None
    grad_hidden = torch.addmm(weight.index_select(0, targets), probs, weight, beta=-1.0 / n, alpha=1.0 / n)
    onehot_t_hidden = torch.zeros_like(weight).index_add_(0, targets, hidden)
    grad_weight = torch.addmm(onehot_t_hidden, probs.t(), hidden, beta=-1.0 / n, alpha=1.0 / n)
    return loss, grad_hidden, grad_weight


class _LinearCrossEntropyFunction(torch.autograd.Function):
    """The loss and its gradients in one pass (the gradients are kept for the backward)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets):
        loss, grad_hidden, grad_weight = _softmax_cross_entropy(hidden, weight, targets, with_grads=True)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss

    @staticmethod
    def backward(ctx, grad):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad.item() != 1.0:  # a CPU scalar: no synchronisation
            grad_hidden, grad_weight = grad_hidden * grad, grad_weight * grad
        return grad_hidden, grad_weight, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """F.cross_entropy(F.linear(hidden, weight).float(), targets), hidden (n, d), targets (n,)."""
    if _cpu_fp32(hidden) and weight.dtype == torch.float32:
        if torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad):
            return _LinearCrossEntropyFunction.apply(hidden, weight, targets)
        return _softmax_cross_entropy(hidden, weight, targets, with_grads=False)[0]
    return F.cross_entropy(F.linear(hidden, weight).float(), targets)


# --- the model -------------------------------------------------------------------------------

class Block(nn.Module):
    def __init__(self, shape: ModelShape, backend: str):
        super().__init__()
        self.input_layernorm = RMSNorm(shape.d_model)
        self.self_attn = Attention(shape, backend)
        self.post_attention_layernorm = RMSNorm(shape.d_model)
        self.mlp = SwiGLU(shape)

    def forward(self, x, cos, sin):
        if _cpu_fp32(x):
            # Each RMSNorm's weight goes into the next matmul's weight instead of the activations:
            # (x_hat * w) @ W.T == x_hat @ (W * w).T, one (out x d) product instead of two
            # (tokens x d) ops forward and three backward.
            norm = self.input_layernorm
            x = self.self_attn(norm.normalize(x), cos, sin, residual=x, in_scale=norm.weight)
            norm = self.post_attention_layernorm
            return self.mlp(norm.normalize(x), residual=x, in_scale=norm.weight)
        x = self.self_attn(self.input_layernorm(x), cos, sin, residual=x)
        return self.mlp(self.post_attention_layernorm(x), residual=x)


class Decoder(nn.Module):
    """The trunk, named like transformers' LlamaModel (`model.` prefix in the state dict)."""

    def __init__(self, shape: ModelShape, backend: str):
        super().__init__()
        self.embed_tokens = nn.Embedding(shape.vocab_size, shape.d_model)
        self.layers = nn.ModuleList(Block(shape, backend) for _ in range(shape.n_layer))
        self.norm = RMSNorm(shape.d_model)


class Transformer(nn.Module):
    def __init__(self, shape: ModelShape, attention: str = "auto"):
        super().__init__()
        if attention not in ATTENTION_BACKENDS:
            raise ValueError(f"model.attention: unknown backend {attention!r}; choose one of {', '.join(ATTENTION_BACKENDS)}")
        if attention == "flash_attn" and not flash_attn_available():
            raise ValueError(f"model.attention: flash_attn requested but {flash_attn_problem()}; use "
                             "model.attention=auto or sdpa")
        self.shape = shape
        self.model = Decoder(shape, attention)
        self.lm_head = None if shape.tie_embeddings else nn.Linear(shape.d_model, shape.vocab_size, bias=False)
        cos, sin = qkv_rotary_tables(shape.seq_len, shape.head_dim)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # GPT-2 / nanoGPT init: N(0, 0.02), residual output projections scaled by 1/sqrt(2L) so the
        # residual stream's variance does not grow with depth. (A fused projection draws the same
        # numbers as its parts did, in the same order.)
        residual_std = INIT_STD / math.sqrt(2 * self.shape.n_layer)
        for name, param in self.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                nn.init.ones_(param)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(param, std=residual_std)
            else:
                nn.init.normal_(param, std=INIT_STD)

    def output_weight(self) -> torch.Tensor:
        return self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """The final norm's output (batch, seq, d_model)."""
        return self._trunk(idx, fold_final_norm=False)[0]

    def _trunk(self, idx: torch.Tensor, fold_final_norm: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The final hidden states and the output weight; with fold_final_norm on the CPU (fp32) the
        final norm's weight is folded into the output weight rather than applied to the states."""
        x = self.model.embed_tokens(idx)
        cos, sin = self.rope_cos[:idx.shape[1]], self.rope_sin[:idx.shape[1]]
        if _cpu_fp32(x):  # tables over every head: the rotary ops then run on contiguous memory
            cos, sin = (t.expand(-1, -1, self.shape.n_head, -1).contiguous() for t in (cos, sin))
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        if fold_final_norm and _cpu_fp32(x):
            return self.model.norm.normalize(x), self.output_weight() * self.model.norm.weight
        return self.model.norm(x), self.output_weight()

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (batch, seq, vocab); with targets, the mean next-token cross-entropy instead.

        The loss goes through forward() so that DDP and torch.compile wrap it as one graph.
        """
        hidden, weight = self._trunk(idx, fold_final_norm=True)
        if targets is None:
            return F.linear(hidden, weight)
        return linear_cross_entropy(hidden.reshape(-1, hidden.size(-1)), weight, targets.reshape(-1))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy, computed in fp32."""
        return self(idx, targets)
