"""Run `python -m train ...` in-process with timers around the phases outside the training steps.

    python scripts/phase_timers.py <the arguments of python -m train>

Prints one `PHASES {...}` JSON line at exit: seconds (and call counts) in data preparation,
evaluation, checkpoints, metrics, progress lines, importing torch, and the whole process.
docs/performance.md ("Wall time in training steps") shows its figures.
"""
import atexit
import json
import runpy
import sys
import time

T0 = time.perf_counter()
acc = {}

def timed(owner, name, key):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            acc[key] = acc.get(key, 0.0) + time.perf_counter() - start
            acc[key + "_n"] = acc.get(key + "_n", 0) + 1
    setattr(owner, name, wrapper)

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
import torch  # noqa: E402,F401
import train.run.lifecycle as lifecycle  # noqa: E402
import train.run.loop as loop  # noqa: E402
acc["import_torch_s"] = time.perf_counter() - T0
timed(loop.Trainer, "evaluate", "eval_s")
timed(loop, "save_checkpoint", "checkpoint_s")
timed(lifecycle, "_prepare_data", "data_s")
timed(loop.Trainer, "_progress", "progress_s")
timed(loop.MetricsLog, "append", "metrics_s")
atexit.register(lambda: print("PHASES " + json.dumps(acc | {"process_s": time.perf_counter() - T0}), flush=True))
sys.argv = ["train"] + sys.argv[1:]
runpy.run_module("train", run_name="__main__")
