"""A sweep directory's identity: the training setup its runs share, recorded once, checked on every
later command, so that one directory never mixes the runs of two setups in its results table.

The identity is the resolved config that shapes a run's result, apart from what the grid varies
(model.params, budget.flops) and what does not change a result (paths of caches, worker counts,
logging, checkpoint cadence, the sweep's grid itself: adding budgets or sizes, or refining,
extends a sweep of the same setup). It lies in <sweep dir>/sweep_config.json.

The sweep's own metadata (command.json, plan.json, plan.txt, sweep_config.json, summary.json) is
written under one file lock, and a command that fails before its runs are launched leaves the
previous metadata as it was.
"""
from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

IDENTITY_FILE = "sweep_config.json"
METADATA_FILES = ("command.json", "plan.json", "plan.txt", IDENTITY_FILE)
# Config groups and top-level keys that are part of the identity ...
INCLUDED = ("model", "data", "optim", "budget", "seed", "eval_tokens", "precision")
# ... and keys inside them that are not.
EXCLUDED = ("model.params", "model.name", "budget.flops", "budget.min_steps", "budget.tolerance",
            "model.attention", "data.name", "data.cache_dir", "data.num_proc", "data.repeat_policy",
            "optim.micro_batch_seqs")


class SweepDirError(ValueError):
    """A sweep directory that holds another setup. The message names the differing keys."""


def _flatten(value: Any, prefix: str, out: dict) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value


def config_identity(cfg) -> dict[str, Any]:
    """The identity as flat `group.key: value` pairs, values resolved. Data fields added after
    sweeps were first recorded count only when set (train/data/config.py), so that a sweep
    recorded before them still matches its own config."""
    from train.data.config import UNSET_NOT_IN_IDENTITY

    flat: dict[str, Any] = {}
    for key in INCLUDED:
        node = cfg.get(key)
        value = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        _flatten(value, key, flat)
    unset = {f"data.{name}" for name in UNSET_NOT_IN_IDENTITY}
    return {k: v for k, v in sorted(flat.items()) if k not in EXCLUDED and not (k in unset and v is None)}


def differences(recorded: dict, current: dict) -> list[str]:
    keys = sorted(set(recorded) | set(current))
    missing = object()
    out = []
    for key in keys:
        old, new = recorded.get(key, missing), current.get(key, missing)
        if old != new:
            show = lambda v: "(absent)" if v is missing else json.dumps(v)  # noqa: E731
            out.append(f"{key} {show(old)} -> {show(new)}")
    return out


def check_identity(sweep_dir: Path, identity: dict) -> None:
    """SweepDirError when sweep_dir records another identity."""
    path = Path(sweep_dir) / IDENTITY_FILE
    try:
        recorded = json.loads(path.read_text())["identity"]
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SweepDirError(f"sweep.out_dir: {path} is unreadable ({error}); remove it to adopt the current "
                            "config, if the runs there were trained with it") from None
    diff = differences(recorded, json.loads(json.dumps(identity, default=str)))
    if diff:
        shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise SweepDirError(f"sweep.out_dir: {sweep_dir} holds a sweep of another config ({shown}); give the "
                            "new config its own sweep.out_dir, or the recorded values to extend this sweep")


def write_identity(sweep_dir: Path, identity: dict) -> None:
    from train.run.rundir import atomic_write_json
    path = Path(sweep_dir) / IDENTITY_FILE
    if not path.exists():
        atomic_write_json(path, {"identity": identity})


@contextmanager
def metadata_lock(sweep_dir: Path):
    """One writer of the sweep directory's metadata at a time (concurrent sweeps on one directory)."""
    Path(sweep_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(sweep_dir) / ".metadata.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def restore_metadata(sweep_dir: Path, before: dict[str, bytes | None]) -> None:
    """Put the metadata files back as `before` holds them (None: the file did not exist)."""
    from train.run.rundir import atomic_write_bytes
    with metadata_lock(sweep_dir):
        for name, content in before.items():
            path = Path(sweep_dir) / name
            if content is None:
                path.unlink(missing_ok=True)
            else:
                atomic_write_bytes(path, content)
