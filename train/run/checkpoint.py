"""Checkpoints: model, optimizer, step, data position and RNG, written atomically; the last two kept.

Loaded with torch.load(weights_only=True): only tensors and plain containers are rebuilt, no
object is unpickled from disk, so a crafted checkpoint cannot run code. A checkpoint that does
not load (truncated, garbage, a pickle payload) is skipped with a warning in favour of the
previous one.
"""
from __future__ import annotations

import re
from pathlib import Path

from train.run import faults
from train.run.rundir import atomic_write_stream, warn

KEEP_LAST = 2
_NAME = re.compile(r"^step-(\d{8})\.pt$")


class CheckpointError(RuntimeError):
    pass


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints, newest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True)


def checkpoint_step(path: Path) -> int:
    return int(_NAME.match(Path(path).name).group(1))


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step-{step:08d}.pt"


def save_checkpoint(run_dir: Path, step: int, state: dict, keep: tuple[int, ...] = ()) -> Path:
    """Write the checkpoint of `step`; delete older ones beyond the last KEEP_LAST, except the
    steps in `keep` (a WSD trunk's branch points)."""
    import torch  # here, not at the top: sweeps and the CLI import this module without needing torch
    path = checkpoint_path(run_dir, step)
    # streamed into the temp file: a 1B model's weights and AdamW states (12.5 GB) never sit
    # serialised in memory
    atomic_write_stream(path, lambda handle: torch.save(state, handle))
    faults.hit("ckpt-prune", path=path)  # the new checkpoint in place, older ones not yet deleted
    for old in [p for p in list_checkpoints(run_dir) if checkpoint_step(p) not in keep][KEEP_LAST:]:
        old.unlink(missing_ok=True)
    return path


def load_latest(run_dir: Path) -> dict | None:
    """The newest checkpoint that loads, or None when there is none. Corrupt ones are skipped."""
    import torch
    candidates = list_checkpoints(run_dir)
    for path in candidates:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "model" not in state or "step" not in state:
                raise CheckpointError("missing model or step")
            return state
        except Exception as error:  # noqa: BLE001 - any failure to load means: fall back
            first_line = (str(error).splitlines() or [""])[0][:200]
            warn(f"checkpoint {path} does not load ({type(error).__name__}: {first_line}); "
                 "falling back to the previous one")
    if candidates:
        raise CheckpointError(f"{checkpoint_dir(run_dir)}: no checkpoint loads; delete the folder to start over")
    return None


def load_model_for_export(run_dir: Path):
    """The model of a run directory's newest checkpoint, built from the shape it records."""
    from train.model import Transformer
    from train.plan.shapes import ModelShape
    state = load_latest(run_dir)
    if state is None:
        raise CheckpointError(f"{run_dir}: no checkpoint found")
    model = Transformer(ModelShape(**state["shape"]), attention="sdpa")
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in state["model"].items()})
    return model.eval()
