import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests never talk to wandb's servers and never download anything.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Without data.cache_dir the `datasets` library writes to its own cache (docs/data.md): the tests
# use a Hugging Face cache of their own, never the machine's ~/.cache/huggingface (subprocesses
# inherit it). Set before `datasets` or `huggingface_hub` is imported: both read it at import.
_HF_HOME = tempfile.mkdtemp(prefix="isoflop-tests-hf-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_DATASETS_CACHE"] = os.path.join(_HF_HOME, "datasets")
os.environ["HF_HUB_CACHE"] = os.path.join(_HF_HOME, "hub")


def run_cli(*args: str, cwd: Path = REPO, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python <args>` in a subprocess, as a user would, and capture its output."""
    full_env = os.environ.copy() | (env or {})
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def demo_corpus():
    """The demo preset's corpus (configs/sweep/demo.yaml's vocabulary), tokenized into the cache
    now. Tests that time a sweep, or need two sweeps to overlap, start from a warm cache: on a
    cold one the first process tokenizes the corpus for several seconds while the others wait."""
    from omegaconf import OmegaConf

    from train.data import DataConfig, prepare_data
    vocab_size = OmegaConf.load(REPO / "configs" / "sweep" / "demo.yaml").data.vocab_size
    return prepare_data(DataConfig(vocab_size=vocab_size))


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test` runs two workers, `--dist loadgroup`), every test that talks
    to the localhost SLURM cluster runs in one worker: the cluster's daemons and state are one per
    machine, and two workers starting or stopping them at once would race."""
    for item in items:
        if item.get_closest_marker("slurm") or item.module.__name__.endswith("test_infra_slurm"):
            item.add_marker(pytest.mark.xdist_group("slurm"))
