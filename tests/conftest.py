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
os.environ.pop("ISOFLOP_LOG_LEVEL", None)  # tests read progress lines on stdout
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


@pytest.fixture(autouse=True)
def one_slurm_test_at_a_time(request):
    """`make test` runs two pytest-xdist workers. The localhost SLURM cluster is one per machine
    (its daemons, its state, its four fake GPUs), so a test marked `slurm` holds a machine-wide
    lock while it runs: two workers never start, stop or fill the cluster at once. (xdist's
    `--dist loadgroup` would keep them in one worker, but with pytest 9.2 its groups are silently
    ignored: pytest-dev/pytest-xdist#1386.)"""
    if request.node.get_closest_marker("slurm") is None:
        yield
        return
    import fcntl
    with open(Path(tempfile.gettempdir()) / "isoflop-slurm-tests.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
