"""Peak memory of one training step per model size, measured, beside the memory model's estimate.

    python scripts/memory_check.py --sizes llama-70m llama-160m llama-410m llama-1b --seq-len 2048 --batch 8
    python scripts/memory_check.py --sizes 3e5 1e6 --vocab 2048 --seq-len 256 --batch 4 --device cpu

For each size the model trains two steps the way the trainer does (AdamW, fused on CUDA; bf16
autocast on CUDA, fp32 on the CPU; eager: the memory model counts eager tensors and is an upper
bound under torch.compile), and the peak of the second step is measured:

- CUDA: `torch.cuda.max_memory_allocated()`, reset after the first step, so the weights,
  gradients, AdamW moments and the step's activations are in it; the CUDA context and the
  caching allocator's free blocks are not.
- CPU (a proxy): the process's peak resident memory during the second step (VmHWM, reset through
  /proc/self/clear_refs) above its resident memory before the model was built, with glibc's mmap
  threshold pinned low so that freed tensors leave the resident set. Linux only.

The estimate comes from the memory model, `train/plan/memory.py`:
`estimate_memory(shape, params_total, precision, ...)` and the estimate's `peak_bytes(micro_batch)`.
Where no such module exists the estimate is left out with a one-line note, and the measured
peaks are still printed. Prints a table and one JSON line per size; `--json FILE` also appends
them to FILE as they are measured.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import inspect
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MMAP_THRESHOLD = "65536"
MEMORY_MODULES = ("train.plan.memory",)
GIB = 2 ** 30

if __name__ == "__main__" and os.environ.get("MALLOC_MMAP_THRESHOLD_") != MMAP_THRESHOLD \
        and sys.platform.startswith("linux"):
    # glibc reads the threshold at start-up: run again with it set (for the CPU proxy; harmless on a GPU).
    os.execve(sys.executable, [sys.executable, *sys.argv], os.environ | {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD})

import torch  # noqa: E402

from train.model import Transformer  # noqa: E402
from train.plan.params import count_params  # noqa: E402
from train.plan.shapes import CATALOG, catalog_shape, shape_from_params  # noqa: E402
from train.run.device import describe, pick_device, pick_dtype  # noqa: E402


def load_memory_model():
    """(estimate_memory, module name), or (None, why not)."""
    for name in MEMORY_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name not in (name, name.rsplit(".", 1)[0]):
                return None, f"{name} does not import: {error}"
            continue
        estimate = getattr(module, "estimate_memory", None)
        if estimate is None:
            return None, f"{name} has no estimate_memory()"
        return estimate, name
    return None, "no memory model (" + " or ".join(m.replace(".", "/") + ".py" for m in MEMORY_MODULES) + ")"


def estimate_gb(estimate_memory, shape, params: int, precision: str, batch: int, device: torch.device) -> float:
    """The model's peak for this step, in GiB; passes only the keywords its signature takes."""
    wanted = {"attention": "sdpa", "compile": False, "world_size": 1, "fused_optimizer": device.type == "cuda",
              "cpu_fused": device.type == "cpu" and precision == "fp32"}
    accepted = inspect.signature(estimate_memory).parameters
    kwargs = {k: v for k, v in wanted.items() if k in accepted}
    return estimate_memory(shape, params, precision, **kwargs).peak_bytes(batch) / GIB


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


class CpuPeak:
    """Peak resident memory above a baseline taken at construction (Linux /proc)."""

    def __init__(self):
        self.baseline = _status_bytes("VmRSS")

    @staticmethod
    def reset() -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # VmHWM := the current resident set

    def peak(self) -> int:
        return _status_bytes("VmHWM") - self.baseline


def measure(size: str, args, device: torch.device, dtype: torch.dtype, estimate_memory) -> dict:
    if size in CATALOG:
        shape = catalog_shape(size, seq_len=args.seq_len)
    else:
        shape = shape_from_params(float(size), args.vocab, args.seq_len)
    params = count_params(shape).total
    precision = "bf16" if dtype == torch.bfloat16 else "fp32"
    x = torch.randint(0, shape.vocab_size, (args.batch, shape.seq_len), device=device)
    y = torch.randint(0, shape.vocab_size, (args.batch, shape.seq_len), device=device)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        kind = "cuda max_memory_allocated"
    else:
        cpu = CpuPeak()
        kind = "cpu peak RSS above baseline (proxy)"
    torch.manual_seed(0)
    model = Transformer(shape, attention="sdpa").to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    autocast = torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step():
        with autocast:
            loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # creates the gradients and AdamW's moments
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        measured = torch.cuda.max_memory_allocated(device)
    else:
        gc.collect()
        cpu.reset()
        step()
        measured = cpu.peak()
    row = {"size": size, "params": params, "shape": f"{shape.n_layer}x{shape.d_model}", "seq_len": shape.seq_len,
           "batch": args.batch, "precision": precision, "device": describe(device),
           "measured_gb": measured / GIB, "measured_kind": kind}
    if estimate_memory is not None:
        try:
            row["estimate_gb"] = estimate_gb(estimate_memory, shape, params, precision, args.batch, device)
        except Exception as error:  # an interface this script does not know: keep the measurement
            row["estimate_error"] = f"{type(error).__name__}: {error}"
        else:
            row["error"] = row["estimate_gb"] / row["measured_gb"] - 1 if measured > 0 else None
    del model, optimizer
    gc.collect()
    return row


def warm_up(device: torch.device, dtype: torch.dtype) -> None:
    """One step of a tiny model first, so that one-time allocations (kernel libraries, thread
    pools) fall before the first size's baseline rather than into its peak."""
    shape = shape_from_params(3e4, 512, 32)
    model = Transformer(shape, attention="sdpa").to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    x = torch.randint(0, shape.vocab_size, (2, shape.seq_len), device=device)
    with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32):
        loss = model(x, x)
    loss.backward()
    optimizer.step()
    del model, optimizer, loss
    gc.collect()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", required=True, help="catalog names or parameter targets")
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8, help="sequences per step (the micro-batch)")
    parser.add_argument("--vocab", type=int, default=50304, help="vocabulary for parameter targets")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    parser.add_argument("--json", metavar="FILE", help="also append each size's JSON row to FILE")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.seq_len < 1:
        parser.error("--batch and --seq-len must be at least 1")
    device = pick_device(args.device)
    dtype = pick_dtype(args.precision, device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
        if not Path("/proc/self/clear_refs").exists():
            sys.exit("error: --device cpu: the CPU proxy needs Linux's /proc/self/clear_refs; measure on a GPU")
    estimate_memory, source = load_memory_model()
    warm_up(device, dtype)
    print(f"device {describe(device)}, {dtype}, torch {torch.__version__}; estimate: "
          + (source if estimate_memory else f"skipped, {source}"), flush=True)
    print(f"{'size':>10} {'params':>13} {'shape':>8} {'batch':>5} {'measured GiB':>12} {'estimate GiB':>12} "
          f"{'error':>7}", flush=True)
    for size in args.sizes:
        row = measure(size, args, device, dtype, estimate_memory)
        row["estimate_source"] = source
        est = f"{row['estimate_gb']:12.3f}" if "estimate_gb" in row else f"{'-':>12}"
        err = f"{row['error']:+7.1%}" if row.get("error") is not None else f"{'-':>7}"
        print(f"{size:>10} {row['params']:>13,} {row['shape']:>8} {row['batch']:>5} {row['measured_gb']:12.3f} "
              f"{est} {err}", flush=True)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
