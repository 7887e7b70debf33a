"""A real single-node SLURM cluster on localhost for tests (helper module, not a test file).

Tests that exercise the SLURM path (sbatch, `hydra/launcher=submitit_slurm`) ask for the cluster
and get an environment to run their subprocesses with::

    from tests.slurm_cluster import require_slurm    # or the `slurm_env` fixture below

    def test_something(tmp_path):
        env = require_slurm()                        # skips here, fails on CI, when impossible
        subprocess.run([...], env=env, check=True)

`ensure_slurm()` runs scripts/slurm/start.sh, which is idempotent: the first call in a fresh
machine installs the Debian packages (as root) and starts munged, MariaDB, slurmdbd, slurmctld and
slurmd; later calls,
from this or any other process, find the daemons running and return in well under a second. The
cluster is left running for the next test; scripts/slurm/stop.sh (or `stop_slurm()`) stops it.

The returned env is a copy of os.environ plus SLURM_CONF (the generated slurm.conf) and PATH with
/usr/sbin. The cluster has real accounting (slurmdbd over MariaDB), so the `sacct` that submitit
polls to notice failed jobs is the real one. Use the env for every subprocess that talks to the
cluster; code that calls submitit in-process needs the same variables in os.environ.

Skipping vs failing: when this machine cannot host the cluster (not root, no apt-get, package
registry unreachable) the cluster is "unavailable": `require_slurm()` skips, unless CI is set
(CI=true/1/yes), where it fails, because CI must really exercise SLURM. Any other start failure
(daemons not coming up) is a bug and always fails. ISOFLOP_SKIP_SLURM=1 opts out on a developer
machine (ignored on CI).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = ROOT / "scripts" / "slurm" / "start.sh"
STOP = ROOT / "scripts" / "slurm" / "stop.sh"

# Facts about the cluster that start.sh builds (tests may rely on them).
NODE = "isoflop-node"
PARTITION = "debug"  # default partition, PriorityTier=1
URGENT_PARTITION = "urgent"  # PriorityTier=2: its jobs preempt (requeue) jobs of `debug`
GPUS = int(os.environ.get("ISOFLOP_SLURM_GPUS", "4"))  # fake GPUs (gres gpu:4)
STATE_DIR = Path(os.environ.get("ISOFLOP_SLURM_DIR", "/tmp/isoflop-slurm"))

EXIT_UNAVAILABLE = 3  # start.sh's exit code for "this machine cannot host the cluster"
START_TIMEOUT_S = 900  # the first call may install packages

_cache: dict[str, object] = {}


class SlurmUnavailable(RuntimeError):
    """This machine cannot host the localhost cluster (not root, no apt, registry unreachable)."""


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def _start() -> dict[str, str]:
    if os.environ.get("ISOFLOP_SKIP_SLURM", "").strip() in {"1", "true", "yes"} and not on_ci():
        raise SlurmUnavailable("ISOFLOP_SKIP_SLURM is set")
    if os.name != "posix" or not START.exists():
        raise SlurmUnavailable(f"needs a POSIX shell and {START}")
    try:
        # one start at a time on this machine (two pytest-xdist workers may both need the cluster)
        with open(Path(tempfile.gettempdir()) / "isoflop-slurm-start.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            proc = subprocess.run(
                ["bash", str(START)], capture_output=True, text=True, timeout=START_TIMEOUT_S
            )
    except FileNotFoundError as e:
        raise SlurmUnavailable(f"bash not found: {e}") from e
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{START} did not finish in {START_TIMEOUT_S} s:\n{e.stderr}") from e
    if proc.returncode == EXIT_UNAVAILABLE:
        raise SlurmUnavailable(proc.stderr.strip().splitlines()[-1] if proc.stderr else "rc 3")
    if proc.returncode != 0:
        raise RuntimeError(
            f"{START} failed (exit {proc.returncode}): this is a bug, not a missing "
            f"prerequisite.\n--- stderr:\n{proc.stderr}\n--- stdout:\n{proc.stdout}"
        )
    conf = None
    for line in proc.stdout.splitlines():
        if line.startswith("export SLURM_CONF="):
            conf = line.split("=", 1)[1].strip()
    if not conf or not Path(conf).is_file():
        raise RuntimeError(f"{START} printed no usable SLURM_CONF:\n{proc.stdout}\n{proc.stderr}")
    env = dict(os.environ)
    env["SLURM_CONF"] = conf
    env["PATH"] = os.pathsep.join([env.get("PATH", ""), "/usr/sbin", "/sbin"])
    return env


def ensure_slurm() -> dict[str, str] | None:
    """Start (or find) the localhost cluster and return the env for talking to it.

    Returns None when this machine cannot host it (see `unavailable_reason()`), except on CI,
    where that raises SlurmUnavailable. Any other start failure raises RuntimeError.
    The outcome is cached for the rest of the process.
    """
    if "env" not in _cache and "reason" not in _cache:
        try:
            _cache["env"] = _start()
        except SlurmUnavailable as e:
            _cache["reason"] = str(e)
    if "env" in _cache:
        return dict(_cache["env"])  # type: ignore[arg-type]
    reason = str(_cache["reason"])
    if on_ci():
        raise SlurmUnavailable(
            f"CI=true but the localhost SLURM cluster cannot start: {reason}. "
            "CI must exercise the real SLURM path; run CI as root on Debian/Ubuntu with apt."
        )
    return None


def unavailable_reason() -> str | None:
    return _cache.get("reason")  # type: ignore[return-value]


def require_slurm() -> dict[str, str]:
    """ensure_slurm(), but pytest.skip() when unavailable (never on CI: there it fails)."""
    env = ensure_slurm()
    if env is None:
        import pytest

        pytest.skip(f"no localhost SLURM cluster: {unavailable_reason()}")
    return env


def stop_slurm(purge: bool = False) -> None:
    """Stop the daemons (by pid file). Other processes using the cluster lose it too."""
    subprocess.run(["bash", str(STOP)] + (["--purge"] if purge else []), check=False)
    _cache.clear()


try:  # the fixture is optional: this module also works outside pytest
    import pytest

    @pytest.fixture(scope="session")
    def slurm_env() -> dict[str, str]:
        """Session fixture: the env for the localhost cluster (skips/fails like require_slurm)."""
        return require_slurm()

except ImportError:  # pragma: no cover
    pass
