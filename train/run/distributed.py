"""Data parallelism through torchrun: one process per device, the global batch split evenly."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def export_slurm_ranks() -> bool:
    """In a submitit job on SLURM with several tasks (hydra.launcher.tasks_per_node=k, one node):
    set torch's RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT from SLURM's task
    variables, through submitit's TorchDistributedEnvironment. Every task sees the job's GPUs and
    takes the one of its local rank. Returns whether it did."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm" or "RANK" in os.environ:
        return False
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return False
    from submitit.helpers import TorchDistributedEnvironment
    env = TorchDistributedEnvironment()
    if env.local_world_size == env.world_size:
        # one node: its tasks meet on the loopback, whether or not the node's name resolves
        env.master_addr = "127.0.0.1"
    env.export(set_cuda_visible_devices=False)
    return True


def init_world(device_type: str) -> World:
    """Join the process group when launched by torchrun, or as one of several SLURM tasks by
    submitit; otherwise a world of one."""
    export_slurm_ranks()
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return World()
    backend = "nccl" if device_type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    world = World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    if device_type == "cuda":
        # the local rank's GPU; where SLURM binds one GPU to each task, the only one it sees
        torch.cuda.set_device(world.local_rank % torch.cuda.device_count())
    return world


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


# Rank 0 prepares the data while the others wait: tokenizing a FineWeb-scale corpus takes hours,
# far past the process group's default timeout (10 minutes under NCCL).
DATA_WAIT = timedelta(hours=24)


def wait_for_main(world: World, failed: bool = False) -> bool:
    """A barrier that waits up to DATA_WAIT, on a gloo group of its own: the training group keeps
    its default timeout, which still catches a hung collective. Rank 0 says whether its work
    failed (it reaches the barrier either way); returns that on every rank."""
    if world.size == 1:
        return failed
    group = dist.new_group(backend="gloo", timeout=DATA_WAIT)
    flag = torch.tensor([float(failed)])
    dist.all_reduce(flag, group=group)
    dist.destroy_process_group(group)
    return bool(flag.item())


def all_mean(value: float, world: World, device: torch.device) -> float:
    if world.size == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.item() / world.size


def all_sum(values: list[float], world: World, device: torch.device) -> list[float]:
    if world.size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def shutdown(world: World) -> None:
    """Leave the process group together. A rank that destroys its gloo group while a peer is still
    working (rank 0 writing result.json) can abort in gloo's teardown ("terminate called without an
    active exception", SIGABRT), so every rank first waits at a barrier."""
    if world.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
