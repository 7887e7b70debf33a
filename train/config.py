"""Structured (typed) Hydra configs: one training run, and the sweep group that multiplies it.

A key that does not exist here is an error, never a silent default. The `model` group is filled
from the shape catalog, so `model=<catalog name>` works without a YAML file per entry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from hydra.core.config_store import ConfigStore

from train.data.config import DataConfig
from train.plan.shapes import CATALOG, CATALOG_SEQ_LEN


# The `sweep` group (python -m sweeps): which budgets, and which model sizes around each optimum.
# It lives here, beside the run's schema, because Hydra composes one config for both.
@dataclass
class BudgetRange:
    start: Optional[float] = None      # first budget C, FLOPs
    stop: Optional[float] = None       # last budget C, FLOPs (inclusive)
    count: int = 0                     # budgets, log-spaced from start to stop


@dataclass
class SweepConfig:
    name: Optional[str] = None         # None: not a sweep (a single `python -m train` run)
    out_dir: Optional[str] = None      # sweep directory; default sweeps_out/<name>
    budgets: List[float] = field(default_factory=list)
    budget_range: BudgetRange = field(default_factory=BudgetRange)
    sizes_per_budget: int = 5          # model sizes N per budget
    span: float = 8.0                  # N_max / N_min within one budget
    # Where each budget's sizes are centred: the predicted optimum N_opt(C) = k_N · C^a.
    # Default prior: Chinchilla, a = 0.5 and D/N = tokens_per_param at the optimum, so
    # N_opt = sqrt(C / (6 · tokens_per_param)).
    tokens_per_param: float = 20.0
    prior_fit: Optional[str] = None    # a fit.json of an earlier sweep: centre on its N_opt(C) instead
    min_params: Optional[float] = None  # drop sizes below/above these bounds (e.g. the catalog range)
    max_params: Optional[float] = None
    effective_tflops: Optional[float] = None  # training throughput for time estimates; None = table
    # Refinement (`python -m sweeps refine <sweep dir>`, or this flag): after the grid, every budget
    # whose best loss lies at its smallest or largest size gets `refine_sizes` more sizes beyond
    # that edge, at the grid's own spacing, and they are trained into the same sweep directory.
    refine: bool = False
    refine_sizes: int = 2
    # cosine: every (C, N) point is its own cosine run. wsd: one warmup-stable trunk per size and a
    # 1-sqrt cooldown branch per budget from the trunk's checkpoint (sweeps/wsd.py, docs/sweeps.md).
    schedule: str = "cosine"


@dataclass
class ModelConfig:
    name: Optional[str] = None         # a catalog entry, e.g. llama-160m
    params: Optional[float] = None     # a total-parameter target for the shape rule
    aspect_ratio: float = 64.0         # shape rule: d_model / n_layer (Chinchilla's small models)
    seq_len: int = 1024
    tie_embeddings: bool = False
    vocab_multiple: int = 64           # pad the tokenizer's vocabulary up to this multiple
    attention: str = "auto"            # auto | sdpa | flash_attn
    # An explicit shape, instead of name or params: d_model and n_layer, the rest derived.
    d_model: Optional[int] = None
    n_layer: Optional[int] = None
    head_dim: Optional[int] = None
    d_ff: Optional[int] = None


@dataclass
class BudgetConfig:
    flops: Optional[float] = None      # the nominal budget C
    convention: str = "6N"             # which FLOPs-per-token convention C is counted in
    min_steps: int = 20                # refuse budgets that afford fewer optimizer steps
    tolerance: float = 0.01            # achieved FLOPs must lie within this fraction of C


@dataclass
class OptimConfig:
    lr: Optional[float] = None         # peak LR; overrides lr_rule
    lr_rule: str = "deepseek"          # deepseek | constant | table
    lr_constant: float = 3e-3
    lr_table: Dict[str, float] = field(default_factory=dict)  # {total params: peak lr}
    batch_tokens: Optional[int] = None  # global batch in tokens; overrides batch_rule
    batch_rule: str = "deepseek"       # deepseek | constant
    micro_batch_seqs: Optional[int] = None  # sequences per forward pass; None = the largest that fits device_memory_gb
    batch_multiple: int = 1            # global batch in whole multiples of this many sequences
                                       # (and always of world_size)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    warmup_fraction: float = 0.05      # of the run's steps ...
    warmup_max_steps: int = 1000       # ... capped, so long runs do not warm up for ages
    final_lr_fraction: float = 0.1     # cosine decays to 10% of peak at the last token (Chinchilla)
    schedule: str = "cosine"           # cosine | wsd (warmup, constant, then a 1-sqrt cooldown to final_lr_fraction)
    cooldown_fraction: float = 0.2     # wsd: the cooldown's share of the run's steps (Hagele et al. 2024)


@dataclass
class WsdConfig:
    """Set by a WSD sweep (sweep.schedule=wsd) on its trunks and branches; empty for other runs."""
    batch_seqs: Optional[int] = None    # the size's shared global batch, in sequences, exactly
    warmup_steps: Optional[int] = None  # the size's shared warmup (its trunk's)
    # A trunk: train at constant LR to the last of these steps (each a branch's cooldown start),
    # keeping a checkpoint at every one of them.
    branch_steps: List[int] = field(default_factory=list)
    # A branch: start from this trunk run directory's checkpoint at the branch step.
    trunk_dir: Optional[str] = None


@dataclass
class WandbConfig:
    mode: str = "auto"                 # auto (online when logged in, else offline) | online | offline | disabled
    project: str = "isoflop"
    group: Optional[str] = None
    name: Optional[str] = None
    tags: List[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    wsd: WsdConfig = field(default_factory=WsdConfig)  # trunk/branch settings of a WSD sweep
    out_dir: Optional[str] = None      # run directory; default runs/<run_id>
    seed: int = 0
    dry_run: bool = False
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    precision: str = "auto"            # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    compile: Optional[bool] = None     # None: torch.compile on CUDA only
    # Data-parallel processes of the run; None = torchrun's WORLD_SIZE, else 1. The global batch is
    # planned in multiples of it (docs/training.md, "Memory model and micro-batches").
    world_size: Optional[int] = None
    # Memory (GiB) of the device the micro-batches are sized for; None = the CUDA device's total
    # memory, no cap on the CPU. e.g. 80 plans for an H100 from any machine.
    device_memory_gb: Optional[float] = None
    eval_every: int = 0                # steps between validation evals; 0 = about 10 per run
    eval_tokens: int = 65536           # validation tokens of the final eval (the run's result)
    eval_fraction: float = 0.02        # the evals before it cost at most this share of the training compute
    log_every: int = 0                 # steps between progress lines; 0 = about 20 per run
    checkpoint_every: int = 0          # steps between checkpoints; 0 = by time only
    checkpoint_minutes: float = 10.0   # also checkpoint when this many minutes have passed
    sweep: SweepConfig = field(default_factory=SweepConfig)  # the `sweep` group (python -m sweeps)
    peak_tflops: Optional[float] = None  # accelerator peak for MFU; None = from the device table
    cpu_threads: Optional[int] = None  # torch threads on the CPU; None = 1 below d_model 512, else torch's default
    # Divergence: besides a NaN/inf loss, the moving median of the last divergence_window train
    # losses held above divergence_factor x its own lowest value for divergence_patience
    # consecutive steps ends the run as `diverged`. The median, not single batches: on a mixed
    # corpus one easy batch can sit at a third of the typical loss. A healthy run's median never
    # doubles (it starts near ln(vocab) and falls); an absurd LR sends it to 10-100x. 0 turns the
    # spike check off.
    divergence_factor: float = 2.0
    divergence_window: int = 20
    divergence_patience: int = 10
    # A run directory whose result is `diverged` is finished: re-running skips it. True trains it
    # again from step 0 (its old result and checkpoints are removed), e.g. after changing the
    # divergence check, which is not part of the run id. `failed` runs are always retried.
    retry_diverged: bool = False
    # Console verbosity: debug | info | warning | error; None = $ISOFLOP_LOG_LEVEL, else info
    # (train/logs.py). Each run's train.log keeps every level whatever this says.
    log_level: Optional[str] = None


def register_configs() -> None:
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    store.store(group="model", name="rule", node=ModelConfig())
    for name in CATALOG:
        store.store(group="model", name=name, node=ModelConfig(name=name, seq_len=CATALOG_SEQ_LEN))
