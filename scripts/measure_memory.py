"""Measured vs estimated activation memory of one training step on the CPU (train/plan/memory.py).

    MALLOC_MMAP_THRESHOLD_=65536 python scripts/measure_memory.py            # the docs' table
    MALLOC_MMAP_THRESHOLD_=65536 python scripts/measure_memory.py --one '[2,128,32,352,2048,256,4,"fp32"]'

For each shape (n_layer, d_model, head_dim, d_ff, vocab, seq_len, micro-batch, precision) a fresh
process builds the model, takes one forward + backward (so that the gradients exist), resets the
kernel's peak-RSS counter (/proc/self/clear_refs, Linux), takes a second forward + backward and
reads the peak resident memory above the steady state (VmHWM - VmRSS). glibc's mmap threshold is
pinned low so that every freed tensor goes back to the kernel and RSS follows the live tensors.
The measured peak holds what the estimate calls per-sequence memory, plus (bf16) the autocast
weight copies, which are compared with their own estimate together.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

SHAPES = [
    # n_layer, d_model, head_dim, d_ff, vocab, seq_len, micro, precision
    [2, 128, 32, 352, 2048, 256, 4, "fp32"],
    [4, 256, 64, 704, 2048, 256, 4, "fp32"],
    [8, 256, 64, 704, 512, 512, 2, "fp32"],
    [2, 512, 64, 1408, 8192, 128, 4, "fp32"],
    [2, 128, 32, 352, 2048, 128, 4, "bf16"],
    [4, 256, 64, 704, 512, 128, 4, "bf16"],
    [2, 256, 64, 704, 4096, 64, 4, "bf16"],
]


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def measure_one(spec: list) -> dict:
    """Run in this process: the measured peak and the estimate for one shape."""
    import torch

    from train.plan.memory import estimate_memory, matmul_params
    from train.plan.params import count_params
    from train.model import Transformer
    from train.plan.shapes import ModelShape

    n_layer, d, head_dim, d_ff, vocab, seq_len, micro, precision = spec
    torch.set_num_threads(1)
    torch.manual_seed(0)
    shape = ModelShape(n_layer=n_layer, d_model=d, n_head=d // head_dim, head_dim=head_dim, d_ff=d_ff,
                       vocab_size=vocab, seq_len=seq_len)
    model = Transformer(shape, attention="sdpa")
    x = torch.randint(0, vocab, (micro, seq_len))
    y = torch.randint(0, vocab, (micro, seq_len))

    def step():
        ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
        with ctx:
            loss = model(x, y)
        loss.backward()

    step()
    gc.collect()
    before = _status("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    step()
    measured = _status("VmHWM") - before
    model_estimate = estimate_memory(shape, count_params(shape).total, precision, "sdpa", cpu_fused=precision == "fp32")
    estimate = model_estimate.activation_peak_bytes(micro)
    if precision == "bf16":
        estimate += 2 * matmul_params(shape)  # the autocast copies, allocated during the step
    return {"spec": spec, "measured": measured, "estimate": estimate, "ratio": estimate / measured}


def measure(spec: list) -> dict:
    """measure_one in a fresh process (with glibc's mmap threshold pinned)."""
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, "--one", json.dumps(spec)], capture_output=True, text=True,
                          env=env, timeout=600)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    if sys.argv[1:2] == ["--one"]:
        print(json.dumps(measure_one(json.loads(sys.argv[2]))))
        return
    print("| L x d (head, d_ff) | vocab | seq x micro | precision | measured MB | estimated MB | est./meas. |")
    print("|---|---|---|---|---|---|---|")
    for spec in SHAPES:
        r = measure(spec)
        n_layer, d, head_dim, d_ff, vocab, seq_len, micro, precision = spec
        print(f"| {n_layer} x {d} ({head_dim}, {d_ff}) | {vocab} | {seq_len} x {micro} | {precision} | "
              f"{r['measured'] / 1e6:.1f} | {r['estimate'] / 1e6:.1f} | {r['ratio']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
