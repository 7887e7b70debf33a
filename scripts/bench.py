"""Training-step throughput and MFU of our model, side by side with transformers' LlamaForCausalLM.

    python scripts/bench.py --quick                      # CPU: the demo's tiny sizes, < 5 minutes
    python scripts/bench.py --sizes llama-70m llama-160m llama-410m llama-1b --seq-len 2048 --batch 8   # a GPU

For each size both models get the same shape, weights, batch, precision and optimizer (AdamW,
fused on CUDA). Timing blocks alternate ours / theirs, so that a shared machine's load hits both
alike; each block is `--steps` training steps (forward, backward, optimizer step) timed with
synchronised wall clocks after warm-up, and the median over `--repeats` blocks is reported
(under `--time-budget`, as in --quick, a size whose share of the budget runs out stops early,
after at least 3 blocks per model). Prints
a table, one JSON line per size, and last a JSON summary with ours_tokens_per_s, hf_tokens_per_s,
ratio (ours / theirs; over several sizes the geometric mean of the per-size ratios) and the device.
With `--json FILE` each size's row is also appended to FILE as soon as it is measured (then the
summary), so a run stopped by a time limit keeps the sizes it finished. A size that runs out of
accelerator memory gets a row with `error` and the next size goes on.

Threads: on the CPU, what `python -m train` picks for the shape (train/run/device.py: one thread below
d_model 512, else torch's default), unless `--threads` is given; both models get the same. On a
shared CPU the result depends on the load (os.getloadavg() is printed with it): see
docs/performance.md.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from train.run.device import configure_cpu_threads, describe, peak_flops, pick_device, pick_dtype  # noqa: E402
from train.export import to_hf  # noqa: E402
from train.plan.flops import model_flops_per_token  # noqa: E402
from train.model import Transformer  # noqa: E402
from train.plan.params import count_params  # noqa: E402
from train.plan.shapes import CATALOG, catalog_shape, shape_from_params  # noqa: E402

# The demo sweep's model sizes and batch (configs/sweep/demo.yaml: 8.5K-64K parameters, vocabulary
# 320, tied, seq_len 128; its DeepSeek-rule batch is 1,152-1,792 tokens, 9-14 sequences). Blocks
# of 10 steps: one step of these models takes 5-30 ms, too short to time alone on a shared CPU.
QUICK_SIZES = ["8.5e3", "1.5e4", "3e4", "6e4"]
QUICK_DEFAULTS = {"seq_len": 128, "batch": 12, "vocab": 320, "tied": True, "steps": 10, "warmup": 2, "repeats": 7,
                  "time_budget": 200.0}
DEFAULTS = {"seq_len": 2048, "batch": 8, "vocab": 50304, "tied": False, "steps": 10, "warmup": 3, "repeats": 5,
            "time_budget": None}
MIN_REPEATS = 3  # the median is over at least this many blocks per model, whatever the time budget


def build_shape(size: str, vocab: int, seq_len: int, tied: bool):
    if size in CATALOG:
        return catalog_shape(size, seq_len=seq_len, tie_embeddings=tied)
    return shape_from_params(float(size), vocab, seq_len, tie_embeddings=tied)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def device_name(device: torch.device) -> str:
    """The accelerator's name, or on the CPU its model name and core count."""
    if device.type != "cpu":
        return describe(device)
    model = "cpu"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model}, {os.cpu_count()} cores"


class Stepper:
    """One model with its optimizer; `run(n)` trains n steps on a fixed batch."""

    def __init__(self, model, loss_fn, device, dtype, fused: bool):
        self.model, self.loss_fn, self.device, self.dtype = model, loss_fn, device, dtype
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                           fused=fused)

    def run(self, steps: int, x: torch.Tensor, y: torch.Tensor) -> float:
        autocast = (torch.autocast(device_type=self.device.type, dtype=self.dtype)
                    if self.dtype != torch.float32 else contextlib.nullcontext())
        sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            with autocast:
                loss = self.loss_fn(x, y)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        sync(self.device)
        return time.perf_counter() - start


def flash_attention_selectable(model, x, dtype) -> bool:
    """Whether SDPA's flash backend accepts our attention's inputs (CUDA, bf16): a forward pass
    restricted to that backend fails if it cannot run."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    try:
        with torch.no_grad(), torch.autocast(device_type=x.device.type, dtype=dtype), \
                sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            model(x[:1])
        return True
    except RuntimeError:
        return False


def release(device: torch.device) -> None:
    """Free what the last size left on the accelerator, and its compiled graphs."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()


def append_json(path: str | None, record: dict) -> None:
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


def bench_size(size: str, args, device, dtype, deadline: float | None = None) -> dict:
    shape = build_shape(size, args.vocab, args.seq_len, args.tied)
    configure_cpu_threads(device, shape.d_model, args.threads)  # as the trainer would for this shape
    torch.manual_seed(0)
    ours = Transformer(shape, attention="auto").to(device)
    hf = None if args.no_hf else to_hf(ours).to(device).train()
    if hf is not None:
        hf.config.use_cache = False
    fused = device.type == "cuda"
    use_compile = args.compile if args.compile is not None else device.type == "cuda"
    ours_forward = torch.compile(ours) if use_compile else ours
    mine = Stepper(ours, lambda x, y: ours_forward(x, y), device, dtype, fused)
    theirs = None if hf is None else Stepper(hf, lambda x, y: hf(input_ids=x, labels=y).loss, device, dtype, fused)

    x = torch.randint(0, shape.vocab_size, (args.batch, shape.seq_len), device=device)
    y = torch.randint(0, shape.vocab_size, (args.batch, shape.seq_len), device=device)
    first_step_s = mine.run(1, x, y)  # time to first step, torch.compile included
    mine.run(args.warmup, x, y)
    if theirs is not None:
        theirs.run(args.warmup + 1, x, y)
    ours_s, hf_s = [], []
    for _ in range(args.repeats):
        ours_s.append(mine.run(args.steps, x, y))
        if theirs is not None:
            hf_s.append(theirs.run(args.steps, x, y))
        if deadline is not None and len(ours_s) >= MIN_REPEATS and time.perf_counter() > deadline:
            break  # out of this size's share of --time-budget: fewer blocks, never fewer than 3
    tokens = args.steps * args.batch * shape.seq_len
    ours_tps = tokens / statistics.median(ours_s)
    row = {"size": size, "params": count_params(shape).total, "shape": f"{shape.n_layer}x{shape.d_model}",
           "seq_len": shape.seq_len, "batch": args.batch, "ours_tokens_per_s": ours_tps,
           "first_step_s": first_step_s, "device": describe(device), "dtype": str(dtype).removeprefix("torch."),
           "compile": use_compile, "steps": args.steps, "repeats": len(ours_s),
           "threads": torch.get_num_threads(), "loadavg": load_average()}
    peak = peak_flops(device, args.peak_tflops)
    if peak:
        row["mfu"] = ours_tps * model_flops_per_token(shape) / peak
    if device.type == "cuda":
        row["flash_sdpa"] = flash_attention_selectable(ours, x, dtype)
    if hf_s:
        row["hf_tokens_per_s"] = tokens / statistics.median(hf_s)
        row["ratio"] = ours_tps / row["hf_tokens_per_s"]
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", help="catalog names or parameter targets")
    parser.add_argument("--quick", action="store_true", help="the demo's sizes on the CPU, a few minutes")
    parser.add_argument("--seq-len", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None, help="sequences per step")
    parser.add_argument("--vocab", type=int, default=None, help="vocabulary for parameter targets")
    parser.add_argument("--tied", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--steps", type=int, default=None, help="steps per timing block")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per model before timing")
    parser.add_argument("--repeats", type=int, default=None, help="timing blocks per model, alternating (median)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: the trainer's rule for each shape)")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds for all sizes (--quick: 200): once a size has used its share, it stops "
                             "after its current block, with at least 3 blocks per model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--no-hf", action="store_true", help="skip the transformers baseline")
    parser.add_argument("--json", metavar="FILE", help="also append each size's JSON row (then the summary) to FILE")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or QUICK_SIZES
    for key, value in (QUICK_DEFAULTS if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not args.sizes:
        parser.error("give --sizes or --quick")
    if min(args.steps, args.repeats) < 1 or args.warmup < 0:
        parser.error("--steps and --repeats must be at least 1, --warmup at least 0")
    if args.repeats < MIN_REPEATS and args.time_budget:
        args.time_budget = None  # fewer repeats than the floor asked for: run exactly those
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = pick_dtype(args.precision, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    started = time.perf_counter()
    rows = []
    header = (f"{'size':>10} {'params':>10} {'shape':>8} {'ours tok/s':>12} {'HF tok/s':>12} {'ratio':>6} {'MFU':>6} "
              f"{'1st step':>9} {'threads':>7}")
    threads = args.threads or ("the trainer's rule per shape" if device.type == "cpu" else torch.get_num_threads())
    print(f"device {device_name(device)}, {dtype}, torch {torch.__version__}, {threads} threads, "
          f"load average {load_average()}; {args.repeats} alternating blocks of {args.steps} step(s) per model, "
          f"batch {args.batch}", flush=True)
    print(header, flush=True)
    for i, size in enumerate(args.sizes):
        deadline = None
        if args.time_budget:  # this size's share of what is left
            left = args.time_budget - (time.perf_counter() - started)
            deadline = time.perf_counter() + left / (len(args.sizes) - i)
        try:
            row = bench_size(size, args, device, dtype, deadline)
        except torch.OutOfMemoryError as error:  # this size does not fit beside the baseline: say so, go on
            row = {"size": size, "seq_len": args.seq_len, "batch": args.batch, "device": describe(device),
                   "error": "out of memory: " + str(error).splitlines()[0]}
            print(f"{size:>10} out of memory at batch {args.batch}; try a smaller --batch", flush=True)
        else:
            print(f"{size:>10} {row['params']:>10,} {row['shape']:>8} {row['ours_tokens_per_s']:>12,.0f} "
                  f"{row.get('hf_tokens_per_s', float('nan')):>12,.0f} {row.get('ratio', float('nan')):>6.2f} "
                  f"{row.get('mfu', float('nan')):>6.1%} {row['first_step_s']:>8.2f}s {row['threads']:>7}",
                  flush=True)
        rows.append(row)
        append_json(args.json, row)
        release(device)
    for row in rows:
        print(json.dumps(row), flush=True)
    failed = [r for r in rows if "error" in r]
    rows = [r for r in rows if "error" not in r]
    if not rows:
        sys.exit("error: --sizes: no size could be measured (" + "; ".join(r["error"] for r in failed) + ")")
    summary = {"ours_tokens_per_s": statistics.fmean(r["ours_tokens_per_s"] for r in rows),
               "device": describe(device), "sizes": [r["size"] for r in rows]}
    if failed:
        summary["failed_sizes"] = [r["size"] for r in failed]
    if not args.no_hf:
        summary["hf_tokens_per_s"] = statistics.fmean(r["hf_tokens_per_s"] for r in rows)
        # geometric mean of the per-size ratios: every size counts alike
        summary["ratio"] = math.exp(statistics.fmean(math.log(r["ratio"]) for r in rows))
        summary["ratio_min"] = min(r["ratio"] for r in rows)
    threads_used = sorted({r["threads"] for r in rows})  # per shape: one number, or the list where sizes differ
    summary.update({"device_name": device_name(device), "dtype": str(dtype).removeprefix("torch."),
                    "torch": torch.__version__, "threads": threads_used[0] if len(threads_used) == 1 else threads_used,
                    "loadavg": load_average(), "wall_s": round(time.perf_counter() - started, 1)})
    if "mfu" in rows[0]:
        summary["mfu"] = {r["size"]: r["mfu"] for r in rows}
    append_json(args.json, summary | {"summary": True})
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
