"""Export a model as a Hugging Face `LlamaForCausalLM` directory (config.json + safetensors).

    python -m train.export RUN_DIR --out DIR

Our module names follow transformers' Llama except for the two fused projections
(self_attn.qkv_proj, mlp.gate_up_proj), which are split back into q_proj/k_proj/v_proj and
gate_proj/up_proj; the config carries the shape, the RMSNorm epsilon and the rotary base.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from train.model import RMS_NORM_EPS, ROPE_THETA, Transformer
from train.plan.shapes import ModelShape


def llama_config(shape: ModelShape):
    from transformers import LlamaConfig
    return LlamaConfig(
        vocab_size=shape.vocab_size, hidden_size=shape.d_model, intermediate_size=shape.d_ff,
        num_hidden_layers=shape.n_layer, num_attention_heads=shape.n_head, num_key_value_heads=shape.n_head,
        head_dim=shape.head_dim, hidden_act="silu", max_position_embeddings=shape.seq_len,
        rms_norm_eps=RMS_NORM_EPS, rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
        tie_word_embeddings=shape.tie_embeddings, attention_bias=False, mlp_bias=False,
        architectures=["LlamaForCausalLM"])


# Our fused projections and the transformers parameters they hold, stacked by rows in this order.
FUSED_PROJECTIONS = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def split_fused(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict (or anything keyed by our parameter names) under transformers' names: fused
    projections split into their parts, a torch.compile prefix dropped."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("_orig_mod.")
        module, _, leaf = key.rpartition(".")
        prefix, _, name = module.rpartition(".")
        if name in FUSED_PROJECTIONS:
            parts = FUSED_PROJECTIONS[name]
            for part, chunk in zip(parts, value.chunk(len(parts), dim=0)):
                out[f"{prefix}.{part}.{leaf}"] = chunk.clone()
        else:
            out[key] = value
    return out


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our state dict under transformers' LlamaForCausalLM names."""
    return split_fused(model.state_dict())


def to_hf(model: Transformer):
    """An in-memory LlamaForCausalLM with our weights."""
    from transformers import LlamaForCausalLM
    hf = LlamaForCausalLM(llama_config(model.shape))
    state = hf_state_dict(model)
    missing, unexpected = hf.load_state_dict(state, strict=False)
    # A tied head has no lm_head.weight of its own; transformers ties it to the embedding.
    allowed_missing = {"lm_head.weight"} if model.shape.tie_embeddings else set()
    if set(missing) - allowed_missing or unexpected:
        raise RuntimeError(f"export: state dict mismatch, missing={missing} unexpected={unexpected}")
    if model.shape.tie_embeddings:
        hf.tie_weights()
    return hf.eval()


def export_model(model: Transformer, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    to_hf(model).save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory written by `python -m train`")
    parser.add_argument("--out", required=True, help="directory for the Hugging Face model")
    args = parser.parse_args(argv)
    from train.run.checkpoint import CheckpointError, load_model_for_export
    try:
        model = load_model_for_export(Path(args.run_dir))
    except (CheckpointError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    path = export_model(model, args.out)
    print(f"exported {sum(p.numel() for p in model.parameters()):,} parameters to {path}")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
