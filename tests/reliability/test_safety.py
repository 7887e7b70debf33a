"""Safety: a checkpoint that carries a pickle payload is refused, not run; nothing in the project
deserialises pickle from a path a user gives; config interpolation cannot run code; the wandb
API key never lands in a run directory, a config or the logs.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

from tests.conftest import REPO, run_cli
from tests.reliability.helpers import ENV, MICRO, STEPS, copy_run, same_result, train

FAKE_KEY = "0123456789abcdef" * 2 + "fedcba98"  # 40 hex characters: shaped like a real wandb key


class Payload:
    """Unpickling this runs a shell command: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.system, (f"touch {self.marker}",)


def test_pickle_payload_checkpoint_is_refused_not_executed(tmp_path, reference):
    run_dir = copy_run(reference, tmp_path / "run")
    (run_dir / "result.json").unlink()
    marker = tmp_path / "PAYLOAD-RAN"
    newest = run_dir / "checkpoints" / "step-00000042.pt"
    state = torch.load(newest, weights_only=True)
    state["payload"] = Payload(marker)  # a valid checkpoint, plus one object that runs code when unpickled
    torch.save(state, newest)
    proc = train(f"out_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not marker.exists(), "the checkpoint's pickle payload ran"
    assert "step-00000042.pt does not load (UnpicklingError: Weights only load failed" in proc.stderr
    assert f"resuming from step 35/{STEPS}" in proc.stdout, "fell back to the previous checkpoint"
    same_result(run_dir, reference)


def test_no_pickle_eval_or_unsafe_yaml_in_the_code():
    """Static guard: the project never unpickles (pickle, torch.load without weights_only, numpy
    allow_pickle), never eval/execs strings, and loads YAML only safely."""
    unsafe = re.compile(r"pickle\.loads?\(|cloudpickle|dill\.|marshal\.loads?|allow_pickle\s*=\s*True|"
                        r"yaml\.(unsafe_)?load\((?![^)]*SafeLoader)|(?<![\w.])eval\(|(?<![\w.])exec\(")
    found = []
    for folder in ("train", "sweeps", "analysis", "scripts", "hydra_plugins"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#", 1)[0]
                if unsafe.search(code):
                    found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
                if "torch.load(" in code and "weights_only=True" not in code:
                    found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_interpolation_cannot_run_code(tmp_path):
    marker = tmp_path / "EVAL-RAN"
    for resolver in ("eval", "python"):
        proc = run_cli("-m", "train", *MICRO, f"out_dir=${{{resolver}:__import__('os').system('touch {marker}')}}",
                       env=ENV)
        assert proc.returncode == 2
        assert proc.stderr.strip().startswith(f"error: out_dir: unknown interpolation resolver {resolver!r}")
        assert len(proc.stderr.strip().splitlines()) == 1 and not marker.exists()
    # the registered resolvers are all data-only: no eval, python, exec or import among them
    from hydra.core.utils import setup_globals
    from omegaconf.basecontainer import BaseContainer

    import sweeps.sweeper  # noqa: F401 - everything that could register a resolver
    import train.run  # noqa: F401
    setup_globals()
    names = set(BaseContainer._resolvers)
    assert not {n for n in names if re.search(r"eval|exec|python(?!_version)|import|call|system", n)}, names
    # oc.env is allowed: it reads a variable, it runs nothing
    from hydra import compose, initialize_config_dir

    from train.config import register_configs
    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["out_dir=${oc.env:HOME}/runs/x"])
    assert cfg.out_dir == str(Path.home() / "runs" / "x")


def test_wandb_api_key_never_written(tmp_path):
    run_dir = tmp_path / "run"
    env = {"WANDB_API_KEY": FAKE_KEY, "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
           "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
           "NETRC": str(tmp_path / "no-netrc")}
    # wandb offline for real; a name interpolating the key tries to smuggle it into the config
    proc = train(f"out_dir={run_dir}", "wandb.mode=offline", "wandb.name=${oc.env:WANDB_API_KEY}", **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files), "wandb wrote its offline run"
    assert (run_dir / "config.yaml").is_file()
    leaks = [str(p.relative_to(tmp_path)) for p in files if FAKE_KEY.encode() in p.read_bytes()]
    assert not leaks, f"API key written to {leaks}"
    assert FAKE_KEY not in proc.stdout + proc.stderr
    shutil.rmtree(tmp_path / "wandb-cache", ignore_errors=True)
