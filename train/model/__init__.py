"""The decoder: a Llama-style transformer (RMSNorm, rotary, SwiGLU, fused attention kernels)."""
from train.model.transformer import (ATTENTION_BACKENDS, RMS_NORM_EPS, ROPE_THETA, Transformer, flash_attn_available,
                                     flash_attn_problem)

__all__ = ["ATTENTION_BACKENDS", "RMS_NORM_EPS", "ROPE_THETA", "Transformer", "flash_attn_available",
           "flash_attn_problem"]
