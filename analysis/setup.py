"""The training setup of a sweep, read from its runs' config.yaml, and the command that trains it.

A fit is only as good as the plan that follows it: `analysis plan` must train the setup the sweep
trained (data, vocabulary, tied embeddings, seq_len, LR and batch rules, precision, ...) at the new
budget, not `python -m train`'s defaults. So `fit` reads every run directory's config.yaml (the
resolved Hydra config the trainer wrote), drops the keys that differ from run to run by design
(RUN_KEYS: the size, the budget, where it ran and how it was logged), and requires the rest to be
identical across the runs: a fit that mixes setups is refused, naming the keys that differ.

fit.json["setup"] holds that `config` (dotted keys) and the Hydra `overrides` that turn
`python -m train`'s defaults into it, found by composing the project's configs and checked by
composing them back (`verified`). Hydra and `train/` are optional here: without them the
overrides list every key of the setup, which Hydra accepts the same way.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path

from train.data.config import UNSET_NOT_IN_IDENTITY

from .errors import AnalysisError

# Keys of config.yaml that are not part of the setup: each run's size and budget, where it ran,
# logging, checkpointing and failure handling, and the sweep's own bookkeeping.
RUN_KEYS = (
    "model.name", "model.params", "model.d_model", "model.n_layer", "model.head_dim", "model.d_ff",
    "budget.flops", "out_dir", "sweep", "wandb", "dry_run", "device", "compile", "cpu_threads",
    "checkpoint_every", "checkpoint_minutes", "log_every", "eval_every", "peak_tflops",
    "data.cache_dir", "data.num_proc", "data.unique_tokens", "divergence_factor", "divergence_patience",
    "world_size", "device_memory_gb", "optim.micro_batch_seqs", "log_level", "retry_diverged",
    "divergence_window",
)
MAX_DIFFS = 6
# Data fields added after runs were first recorded (train/data/config.py, UNSET_NOT_IN_IDENTITY):
# unset, they are left out of the setup, so runs recorded before them share the setup of new ones.
UNSET_ABSENT = tuple(f"data.{name}" for name in UNSET_NOT_IN_IDENTITY)


def _is_run_key(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RUN_KEYS)


def flatten(node, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}; empty dicts and lists stay values."""
    out = {}
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def read_setup(run_dir: str) -> dict | None:
    """The setup keys of a run directory's config.yaml, or None when it has none."""
    fn = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(fn):
        return None
    try:
        import yaml

        with open(fn) as f:
            cfg = yaml.safe_load(f)
    except Exception as e:  # unreadable YAML: name the file
        raise AnalysisError(f"{fn}: cannot read the run's config ({e})") from None
    if not isinstance(cfg, dict):
        raise AnalysisError(f"{fn}: not a config mapping")
    return {k: v for k, v in flatten(cfg).items()
            if not _is_run_key(k) and not (k in UNSET_ABSENT and v is None)}


def _value(v) -> str:
    return json.dumps(v, sort_keys=True)


def common_setup(setups: dict) -> tuple[dict | None, list[str]]:
    """One setup for every run (run dir -> setup or None), or an error naming the keys that
    differ. Returns (setup or None, notes)."""
    have = {d: s for d, s in setups.items() if s is not None}
    notes = []
    if not have:
        return None, notes
    if len(have) < len(setups):
        missing = sorted(set(setups) - set(have))
        notes.append(f"{len(missing)} run(s) without config.yaml (e.g. {missing[0]}); the setup is read from the other {len(have)}")
    keys = sorted(set().union(*have.values()))
    diffs = []
    for k in keys:
        groups: dict[str, list[str]] = {}
        for d, s in have.items():
            groups.setdefault(_value(s.get(k, "<absent>")), []).append(d)
        if len(groups) > 1:
            parts = [f"{v} in {len(ds)} run(s) (e.g. {ds[0]})" for v, ds in sorted(groups.items(), key=lambda g: -len(g[1]))]
            diffs.append(f"{k}: " + " vs ".join(parts))
    if diffs:
        more = f"; and {len(diffs) - MAX_DIFFS} more key(s)" if len(diffs) > MAX_DIFFS else ""
        raise AnalysisError(
            f"the runs were trained with different setups, and one fit needs one setup: {'; '.join(diffs[:MAX_DIFFS])}{more}. "
            "Fit each setup's runs separately (pass their run directories)"
        )
    return next(iter(have.values())), notes


# ---- Hydra overrides ---------------------------------------------------------------------------

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")


def hydra_value(v) -> str:
    """A value in Hydra's override grammar."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        if _PLAIN.fullmatch(v) and v.lower() not in ("true", "false", "null", "inf", "nan"):
            return v
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(v, list):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    return hydra_value(str(v))


def _configs_dir() -> Path | None:
    try:
        import importlib.util

        spec = importlib.util.find_spec("train")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    d = Path(spec.origin).resolve().parent.parent / "configs"
    return d if (d / "train.yaml").is_file() else None


def compose(overrides: list[str]):
    """The resolved config `python -m train <overrides>` would run (OmegaConf), via Hydra."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from train.config import register_configs

    d = _configs_dir()
    if d is None:
        raise RuntimeError("the project's configs/ directory is not found")
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(d), version_base="1.3"):
        return hydra_compose("train", overrides=list(overrides))


def _flat_config(overrides):
    from omegaconf import OmegaConf

    return flatten(OmegaConf.to_container(compose(overrides), resolve=True))


def setup_overrides(setup: dict) -> tuple[list[str], bool, str]:
    """(overrides, verified, how): the overrides from `python -m train`'s defaults to `setup`.
    verified: composing them gives `setup` back exactly."""
    try:
        base = _flat_config([])
        ov = []
        name = setup.get("data.name")
        d = _configs_dir()
        if name and name != base.get("data.name") and d is not None and (d / "data" / f"{name}.yaml").is_file():
            ov.append(f"data={name}")
            base = _flat_config(ov)
        for k in sorted(setup):
            if k not in base:
                raise RuntimeError(f"{k} is not a key of the training config")
            if _value(base[k]) != _value(setup[k]):
                ov.append(f"{k}={hydra_value(setup[k])}")
        back = _flat_config(ov)
        wrong = [k for k in setup if _value(back.get(k)) != _value(setup[k])]
        if wrong:
            raise RuntimeError(f"composing the overrides gives other values for {', '.join(wrong[:5])}")
        return ov, True, "composed against configs/ and checked"
    except Exception as e:  # no Hydra or train/ here, or a config of another version
        return [f"{k}={hydra_value(v)}" for k, v in sorted(setup.items())], False, f"every setup key listed ({e})"


def command(overrides: list[str]) -> str:
    return " ".join(["python -m train", *(shlex.quote(o) for o in overrides)])
