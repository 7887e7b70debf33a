"""Export a model as a Hugging Face `LlamaForCausalLM` directory (config.json + safetensors).

    python -m train.export RUN_DIR --out DIR [--allow-incomplete]

The directory loads whole in transformers and in evaluation harnesses (lm-eval's `hf` model):
the weights, the run data's tokenizer (tokenizer.json and its config, from the prepared data the
run trained on), and a config and generation config whose bos, eos and pad ids are the data's
end-of-text id (the one token that separates documents in training). Only a run whose result is
`completed` exports; `--allow-incomplete` exports the newest checkpoint of any other run.

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


class ExportError(ValueError):
    """A run directory or output that cannot be exported. The message names the argument."""


def check_finished(run_dir: Path, allow_incomplete: bool) -> None:
    """ExportError unless the run completed (or allow_incomplete)."""
    import json
    try:
        result = json.loads((run_dir / "result.json").read_text())
        status = result.get("status")
    except FileNotFoundError:
        result, status = {}, "unfinished (no result.json: interrupted, preempted or still training)"
    except (OSError, ValueError, AttributeError) as error:
        raise ExportError(f"run_dir: {run_dir}/result.json is unreadable ({error})") from None
    if status != "completed" and not allow_incomplete:
        reason = f" ({result['reason']})" if result.get("reason") else ""
        raise ExportError(f"run_dir: {run_dir} is {status}{reason}, not completed; finish it (re-run its command "
                          "to resume), or pass --allow-incomplete to export its newest checkpoint anyway")


def run_tokenizer(run_dir: Path):
    """The run's tokenizer (transformers) and its end-of-text id, from the data its config names."""
    from omegaconf import OmegaConf

    from train.data import DataConfig, prepare_data
    from train.data.tokenizer import hf_tokenizer
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise ExportError(f"run_dir: {run_dir} has no config.yaml (not a run directory of `python -m train`)")
    prepared = prepare_data(DataConfig.from_any(OmegaConf.load(config).data))  # the cache: no work
    tokenizer = hf_tokenizer(prepared.tokenizer_path, eos_token=prepared.meta["tokenizer"].get("eos"))
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.model_max_length = int(OmegaConf.load(config).model.seq_len)
    if tokenizer.eos_token_id != prepared.eos_id:
        raise ExportError(f"run_dir: the tokenizer's end-of-text id {tokenizer.eos_token_id} is not the data's "
                          f"{prepared.eos_id}")
    return tokenizer, prepared.eos_id


def set_special_ids(hf, eos: int) -> None:
    """bos, eos and pad: the data's end-of-text id (documents are separated by it, nothing else)."""
    for config in (hf.config, hf.generation_config):
        config.bos_token_id = config.eos_token_id = config.pad_token_id = eos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory written by `python -m train`")
    parser.add_argument("--out", required=True, help="directory for the Hugging Face model (created)")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="export a run that did not complete (diverged, failed, interrupted) from its newest checkpoint")
    args = parser.parse_args(argv)
    from train.run.checkpoint import CheckpointError, load_model_for_export
    from train.data import DataError
    from train.run.lifecycle import writable_dir
    run_dir, out = Path(args.run_dir), Path(args.out)
    try:
        if not run_dir.is_dir():
            raise ExportError(f"run_dir: no such folder {run_dir}")
        try:
            writable_dir(out, "--out")
        except ValueError as error:
            raise ExportError(str(error)) from None
        check_finished(run_dir, args.allow_incomplete)
        model = load_model_for_export(run_dir)
        tokenizer, eos = run_tokenizer(run_dir)
    except (CheckpointError, FileNotFoundError, ExportError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    hf = to_hf(model)
    set_special_ids(hf, eos)
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"exported {sum(p.numel() for p in model.parameters()):,} parameters and the tokenizer "
          f"(end-of-text id {eos}) to {out}")
    return 0


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
