"""The decoder: a Llama-style transformer (RMSNorm, rotary, SwiGLU, fused attention kernels)."""
from train.model.transformer import ATTENTION_BACKENDS, RMS_NORM_EPS, ROPE_THETA, Transformer

__all__ = ["ATTENTION_BACKENDS", "RMS_NORM_EPS", "ROPE_THETA", "Transformer"]
