"""`hydra/launcher=gpu_pool`: one fresh process per job, pinned to GPUs from a pool. Hydra only
instantiates plugin classes defined under `hydra_plugins`, so this is a named shim over
sweeps.gpu_pool, which holds the logic; the fields below are its settings (docs/sweeps.md)."""
from dataclasses import dataclass
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore

from sweeps import gpu_pool


class GpuPoolLauncher(gpu_pool.GpuPoolLauncher):
    pass


@dataclass
class GpuPoolLauncherConf:
    _target_: str = "hydra_plugins.isoflop.gpu_pool_launcher.GpuPoolLauncher"
    # GPU ids, e.g. [0,1,2,3], or "auto": CUDA_VISIBLE_DEVICES if set, else nvidia-smi, else torch.
    gpus: Any = "auto"
    # GPUs per run; k > 1 runs go through `python -m torch.distributed.run --standalone --nproc_per_node=k`.
    gpus_per_run: int = 1
    # Runs that may share one GPU at the same time (small models); each is a (gpu, lane) slot.
    runs_per_gpu: int = 1
    # At most this many runs at once (null: as many as the slots allow).
    max_concurrent: Optional[int] = None
    # The command each job runs, its overrides appended; null: [sys.executable, "-m", "train"].
    command: Optional[List[str]] = None
    # Wrap gpus_per_run > 1 jobs in torch.distributed.run (false: run `command` once with k GPUs visible).
    torchrun: bool = True
    # Each job's stdout+stderr, in its out_dir (or <hydra.sweep.dir>/<job number>).
    log_name: str = gpu_pool.LOG_NAME


ConfigStore.instance().store(group="hydra/launcher", name="gpu_pool", node=GpuPoolLauncherConf, provider="isoflop")
