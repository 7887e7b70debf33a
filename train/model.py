"""Llama-style decoder-only transformer: RMSNorm, rotary positions, SwiGLU, no biases.

Module names follow transformers' LlamaForCausalLM (model.layers.i.self_attn.q_proj, ...) so
export is a plain state-dict copy. Built from a train.shapes.ModelShape.
"""
from __future__ import annotations

import importlib.util
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from train.shapes import ModelShape

RMS_NORM_EPS = 1e-5
ROPE_THETA = 10000.0
INIT_STD = 0.02
ATTENTION_BACKENDS = ("auto", "sdpa", "flash_attn")


def flash_attn_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = RMS_NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 for stability under bf16 autocast, as Llama does.
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


def rotary_tables(seq_len: int, head_dim: int, theta: float = ROPE_THETA) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)  # the "rotate half" layout of Llama / transformers
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, shape: ModelShape, backend: str):
        super().__init__()
        self.n_head, self.head_dim = shape.n_head, shape.head_dim
        width = shape.n_head * shape.head_dim
        self.q_proj = nn.Linear(shape.d_model, width, bias=False)
        self.k_proj = nn.Linear(shape.d_model, width, bias=False)
        self.v_proj = nn.Linear(shape.d_model, width, bias=False)
        self.o_proj = nn.Linear(width, shape.d_model, bias=False)
        self.use_flash_attn = backend == "flash_attn" or (backend == "auto" and flash_attn_available())

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        split = (batch, seq, self.n_head, self.head_dim)
        q, k, v = self.q_proj(x).view(split), self.k_proj(x).view(split), self.v_proj(x).view(split)
        q, k = apply_rotary(q, cos[:seq, None], sin[:seq, None]), apply_rotary(k, cos[:seq, None], sin[:seq, None])
        if self.use_flash_attn and x.is_cuda and x.dtype in (torch.float16, torch.bfloat16):
            from flash_attn import flash_attn_func
            out = flash_attn_func(q, k, v, causal=True)
        else:
            # SDPA dispatches to FlashAttention / memory-efficient kernels on CUDA.
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                 is_causal=True).transpose(1, 2)
        return self.o_proj(out.reshape(batch, seq, -1))


class SwiGLU(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.gate_proj = nn.Linear(shape.d_model, shape.d_ff, bias=False)
        self.up_proj = nn.Linear(shape.d_model, shape.d_ff, bias=False)
        self.down_proj = nn.Linear(shape.d_ff, shape.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, shape: ModelShape, backend: str):
        super().__init__()
        self.input_layernorm = RMSNorm(shape.d_model)
        self.self_attn = Attention(shape, backend)
        self.post_attention_layernorm = RMSNorm(shape.d_model)
        self.mlp = SwiGLU(shape)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        return x + self.mlp(self.post_attention_layernorm(x))


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
            raise ValueError("model.attention: flash_attn requested but the flash-attn package or CUDA is missing")
        self.shape = shape
        self.model = Decoder(shape, attention)
        self.lm_head = None if shape.tie_embeddings else nn.Linear(shape.d_model, shape.vocab_size, bias=False)
        cos, sin = rotary_tables(shape.seq_len, shape.head_dim)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # GPT-2 / nanoGPT init: N(0, 0.02), residual output projections scaled by 1/sqrt(2L) so the
        # residual stream's variance does not grow with depth.
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
        x = self.model.embed_tokens(idx)
        for layer in self.model.layers:
            x = layer(x, self.rope_cos, self.rope_sin)
        return self.model.norm(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (batch, seq, vocab); with targets, the mean next-token cross-entropy instead.

        The loss goes through forward() so that DDP and torch.compile wrap it as one graph.
        """
        logits = F.linear(self.hidden_states(idx), self.output_weight())
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy, computed in fp32."""
        return self(idx, targets)
