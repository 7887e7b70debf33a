"""Fault injection at named points, for the reliability tests (tests/reliability/, docs/reliability.md).

Off unless the environment variable ISOFLOP_FAULT is set; then it holds one or more specs,
separated by commas:

    ISOFLOP_FAULT=<point>[:<n>][:<action>]

- point: where (the table below).
- n: which hit of that point fires, 1-based (default 1), or `*` for every hit. For `step`,
  `eval` and `metrics` n is the global step number, so `step:12` means step 12 even after a
  resume; for the other points it counts the hits in this process (`ckpt-write:2` is this
  process's second checkpoint save).
- action: `kill` (default): SIGKILL this process, a crash that runs no handler and no cleanup;
  `enospc`: raise OSError(ENOSPC), a full disk; `term`/`usr1`/`usr2`: send that signal to this
  process (a preemption at an exact point); `sleep<seconds>`, e.g. `sleep0.2`: a slow step;
  `oom`: raise torch.cuda.OutOfMemoryError (a micro-batch too large for the device).

| point | where |
|---|---|
| `step` | inside a training step: gradients computed, optimizer step not yet taken |
| `eval` | inside a validation pass, after its first batch |
| `metrics` | inside the append of a metrics.jsonl row: half of the line written and flushed |
| `<kind>-write` | inside an atomic write: half of the temp file written and fsynced |
| `<kind>-rename` | inside an atomic write: temp file complete and fsynced, not yet renamed |
| `ckpt-prune` | a new checkpoint in place, the older ones not yet deleted |
| `first-step` | inside each try of this process's first training step: gradients computed, optimizer update not yet started (`first-step:1:oom` tests the micro-batch back-off) |

`<kind>` names the file of an atomic write (train/run/rundir.py): `ckpt` (checkpoints/step-*.pt),
`result` (result.json), `csv` (results.csv), `metrics` (metrics.jsonl rewritten on resume),
`config` (config.yaml), `plan` (plan.json), `env` (env.json), `summary` (summary.json).

Each fault prints one `fault injected: ...` line to stderr before it acts, so a test can tell
that the process died where it meant it to.
"""
from __future__ import annotations

import errno
import os
import signal
import sys
import time
from dataclasses import dataclass

ENV = "ISOFLOP_FAULT"


@dataclass(frozen=True)
class Spec:
    point: str
    n: int | None      # None: every hit
    action: str


_parsed: tuple[str, list[Spec]] | None = None
_hits: dict[str, int] = {}


def parse(text: str) -> list[Spec]:
    specs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        parts = item.split(":")
        point, n, action = parts[0], 1, "kill"
        for extra in parts[1:]:
            if extra == "*":
                n = None
            elif extra.isdigit():
                n = int(extra)
            elif extra in ("kill", "enospc", "term", "usr1", "usr2", "oom") or extra.startswith("sleep"):
                action = extra
            else:
                raise ValueError(f"{ENV}: cannot read {item!r}; expected <point>[:<n>|*][:<action>]")
        specs.append(Spec(point, n, action))
    return specs


def _specs() -> list[Spec]:
    global _parsed
    text = os.environ.get(ENV, "")
    if _parsed is None or _parsed[0] != text:
        _parsed = (text, parse(text))
    return _parsed[1]


def kind_of(filename: str) -> str:
    """The fault-point kind of an atomically written file."""
    if filename.startswith("step-") and filename.endswith(".pt"):
        return "ckpt"
    if filename == "results.csv":
        return "csv"
    return filename.split(".", 1)[0]  # result.json -> result, metrics.jsonl -> metrics, ...


def active() -> bool:
    return bool(os.environ.get(ENV))


def hit(point: str, step: int | None = None, path: object = None) -> None:
    """Called at a named point; acts when ISOFLOP_FAULT names it. Costs one dict lookup when off."""
    if not os.environ.get(ENV):
        return
    _hits[point] = _hits.get(point, 0) + 1
    which = step if step is not None else _hits[point]
    for spec in _specs():
        if spec.point == point and (spec.n is None or spec.n == which):
            _act(spec, point, which, path)


def _act(spec: Spec, point: str, which: int, path: object) -> None:
    if not spec.action.startswith("sleep"):
        print(f"fault injected: {point}:{which}: {spec.action}" + (f" ({path})" if path else ""),
              file=sys.stderr, flush=True)
    if spec.action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # SIGKILL is delivered at once; never return into the code under test
    elif spec.action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path) if path else None)
    elif spec.action in ("term", "usr1", "usr2"):
        os.kill(os.getpid(), {"term": signal.SIGTERM, "usr1": signal.SIGUSR1, "usr2": signal.SIGUSR2}[spec.action])
    elif spec.action == "oom":
        import torch
        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected by {ENV} at {point}:{which})")
    elif spec.action.startswith("sleep"):
        time.sleep(float(spec.action.removeprefix("sleep") or 0.1))
