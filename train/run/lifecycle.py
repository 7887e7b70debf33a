"""One training run at a fixed FLOP budget: set up, resume, train, evaluate, write the result.

Exit codes of `python -m train` (docs/reliability.md):
  0 completed (or already finished), 2 bad input, 3 ended diverged or failed, 4 another process
  is training this run directory, 74 disk full (nothing recorded; free space and re-run to
  resume), 75 preempted (checkpoint saved; re-run to resume).
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import sys
from contextlib import contextmanager
from pathlib import Path

from omegaconf import OmegaConf

from train.logs import get_logger, run_log
from train.data import DataConfig, check_repeats, prepare_data
from train.plan import RunPlan, make_plan
from train.plan.errors import ConfigError
from train.run.checkpoint import list_checkpoints, load_latest
from train.run.exit_codes import EXIT_BAD_INPUT, EXIT_BUSY, EXIT_DISK_FULL
from train.run.rundir import (MetricsLog, RunLock, RunLocked, atomic_write_bytes, atomic_write_json, environment,
                              read_result, remove_temp_files, scrub_secrets)

# torch and the modules that import it load inside run_training: a dry run, or a bad override,
# answers without paying for them.
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


log = get_logger("run")


# Above this share of embedding parameters a run's N is mostly its vocabulary table: the fit then
# measures the tokenizer more than the model (the demo's largest share is 60%).
MOSTLY_EMBEDDING = 0.75


def mostly_embedding(plan: RunPlan, cfg) -> str | None:
    """A warning when most of the model's parameters are embedding, else None."""
    share = 1 - plan.params.non_embedding / plan.params.total
    if share <= MOSTLY_EMBEDDING:
        return None
    shape = plan.shape
    tied = "" if shape.tie_embeddings else ", model.tie_embeddings=true"
    return (f"N={plan.params.total:.3g} is {share:.0%} embedding (vocabulary {shape.vocab_size:,} x d_model "
            f"{shape.d_model}{'' if shape.tie_embeddings else ', twice: untied'}); for models this small choose a "
            f"smaller data.vocab_size (a byte-level BPE of 512-2048){tied}, or larger models; docs/data.md")


def run_dir_for(cfg, plan: RunPlan) -> Path:
    return Path(cfg.out_dir) if cfg.out_dir else Path("runs") / plan.run_id


def check_run_settings(cfg) -> None:
    """The settings that only a real run uses (a dry run ignores them), each checked by name."""
    def bad(field: str, why: str) -> ConfigError:
        return ConfigError(f"{field}: {why}")
    if cfg.device != "auto" and cfg.device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise bad("device", f"unknown device {cfg.device!r}; choose auto, cpu, cuda or cuda:N")
    if cfg.precision not in ("auto", "fp32", "bf16"):
        raise bad("precision", f"unknown value {cfg.precision!r}; choose auto, fp32 or bf16")
    from train.tracking.wandb_log import MODES
    if cfg.wandb.mode not in MODES:
        raise bad("wandb.mode", f"unknown mode {cfg.wandb.mode!r}; choose one of {', '.join(MODES)}")
    for field in ("eval_every", "log_every", "checkpoint_every"):
        if cfg[field] < 0:
            raise bad(field, f"must be 0 (automatic) or a positive number of steps, got {cfg[field]}")
    if not cfg.eval_tokens > 0:
        raise bad("eval_tokens", f"must be positive, got {cfg.eval_tokens}")
    if not 0 <= cfg.eval_fraction <= 1:  # also false for NaN
        raise bad("eval_fraction", f"must lie in [0, 1] (a share of the training compute), got {cfg.eval_fraction}")
    if not cfg.checkpoint_minutes > 0:  # also false for NaN
        raise bad("checkpoint_minutes", f"must be a positive number of minutes, got {cfg.checkpoint_minutes}")
    if cfg.optim.micro_batch_seqs is not None and cfg.optim.micro_batch_seqs < 0:
        raise bad("optim.micro_batch_seqs", f"must be positive (or null for the whole batch), got "
                                            f"{cfg.optim.micro_batch_seqs}")
    if not 0 <= cfg.seed < 2 ** 32:
        raise bad("seed", f"must be an integer in [0, 2**32 - 1] (it seeds numpy and torch), got {cfg.seed}")
    from train.plan.hparams import check_schedule
    check_schedule(cfg.optim)
    if cfg.cpu_threads is not None and cfg.cpu_threads < 1:
        raise bad("cpu_threads", f"must be at least 1 (or null: chosen by model width), got {cfg.cpu_threads}")
    factor = cfg.divergence_factor
    if not (factor == 0 or factor > 1) or not math.isfinite(factor):
        raise bad("divergence_factor", f"must be 0 (off) or a finite number above 1, got {factor}")
    if cfg.divergence_patience < 1:
        raise bad("divergence_patience", f"must be at least 1 step, got {cfg.divergence_patience}")
    if cfg.divergence_window < 1:
        raise bad("divergence_window", f"must be at least 1 step, got {cfg.divergence_window}")
    DataConfig.from_any(cfg.data).validate()  # the data fields, before any corpus work


def writable_dir(path, field: str) -> None:
    """Raise ConfigError unless `path` is, or can become, a folder this process can write in.
    Creates nothing: probes the nearest existing folder with a temporary file."""
    import tempfile
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{field}: {path} is a file, not a folder; choose a folder (it is created if missing)")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{field}: {probe} is a file, so {path} cannot be a folder; choose another path")
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".write-probe-"):
            pass
    except OSError as error:
        raise ConfigError(f"{field}: cannot write in {probe} ({error.strerror}); choose a writable folder") from None


def _prepare_data(data_cfg):
    """prepare_data, with the corpus reader's own errors (Hugging Face datasets) and a cache it
    cannot write as one-line DataErrors."""
    from train.data import DataError
    try:
        return prepare_data(data_cfg)
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001 - only errors raised inside `datasets` are translated
        from train.data.paths import data_dir
        cache = str(data_dir(data_cfg.cache_dir))
        if (isinstance(error, OSError) and str(error.filename or "").startswith(cache)
                and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST)):
            where = f"{error.filename}: " if error.filename else ""
            raise DataError(f"data.cache_dir: cannot write the prepared data ({where}{error.strerror}); set "
                            "data.cache_dir (or $ISOFLOP_CACHE) to a writable folder") from None
        chain, cause = [], error
        while cause is not None:
            chain.append(cause)
            cause = cause.__cause__ or cause.__context__
        if not any(type(e).__module__.startswith("datasets") for e in chain):
            raise
        where = ", ".join(map(str, data_cfg.paths)) or data_cfg.hf_name or data_cfg.source
        if any(type(e).__name__ == "SchemaInferenceError" for e in chain):
            raise DataError(f"data.paths: the corpus is empty (no text in {where})") from error
        root = chain[-1]
        raise DataError(f"data.paths: cannot read the corpus {where}: {type(root).__name__}: "
                        f"{str(root).splitlines()[0] if str(root) else ''}") from error


def _device(name: str):
    from train.run.device import pick_device
    try:
        return pick_device(name)
    except (RuntimeError, ValueError) as error:
        raise ConfigError(f"device: {str(error).removeprefix('device: ').splitlines()[0]}") from error


def run_training(cfg) -> dict | None:
    check_run_settings(cfg)
    plan = make_plan(cfg)  # bad budgets and sizes fail here, before torch loads
    import torch

    from train.model import ATTENTION_BACKENDS, flash_attn_available, flash_attn_problem
    from train.run import distributed
    from train.run.device import configure_cpu_threads, pick_dtype
    if cfg.model.attention not in ATTENTION_BACKENDS:
        raise ConfigError(f"model.attention: unknown backend {cfg.model.attention!r}; choose one of "
                          f"{', '.join(ATTENTION_BACKENDS)}")
    if cfg.model.attention == "flash_attn" and not flash_attn_available():
        raise ConfigError(f"model.attention: flash_attn requested but {flash_attn_problem()}; use "
                          "model.attention=auto (flash-attn where it works, else SDPA) or sdpa")
    device = _device(cfg.device)
    world = distributed.init_world(device.type)
    if world.size > 1 and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())  # the local rank's (init_world)
    dtype = pick_dtype(cfg.precision, device)
    trained_in = {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype]
    if plan.precision != trained_in:  # precision=auto with device=auto, resolved differently without torch
        plan = make_plan(cfg, precision=trained_in)
    if world.size != plan.world_size and cfg.get("world_size") is None:
        # world_size unset: the plan is for the processes that run it (a SLURM job's tasks learn
        # their WORLD_SIZE only here, from init_world)
        plan = make_plan(cfg, precision=plan.precision)
    if world.size != plan.world_size:
        raise ConfigError(f"world_size: the run is planned for {plan.world_size} processes but {world.size} "
                          f"are running; set world_size={world.size} (or leave it unset under torchrun)")
    if plan.budget.batch_seqs % world.size:
        raise ConfigError(f"optim.batch_multiple: the global batch of {plan.budget.batch_seqs} sequences does not "
                          f"split over {world.size} processes; set optim.batch_multiple={world.size}")
    run_dir = run_dir_for(cfg, plan)
    writable_dir(run_dir, "out_dir")
    heavy = mostly_embedding(plan, cfg)
    if heavy and not cfg.sweep.name:  # a sweep says it once, when it plans
        log.warning(heavy)
    finished = _finished(run_dir, plan)
    if _done(cfg, finished):
        _say_done(plan, finished, run_dir)
        return finished
    configure_cpu_threads(device, plan.shape.d_model, cfg.cpu_threads)

    # Data: rank 0 prepares (and caches) first, the others then read the cache. A sweep has
    # prepared it before launching any run.
    data_cfg = DataConfig.from_any(cfg.data)
    failure = None
    if world.is_main:
        try:
            prepared = _prepare_data(data_cfg)
        except Exception as error:  # noqa: BLE001 - re-raised below, once the other ranks know
            failure = error
    if distributed.wait_for_main(world, failed=failure is not None):
        if failure is not None:
            raise failure
        from train.data import DataError
        raise DataError("data: rank 0 could not prepare the data; its output says why")
    if not world.is_main:
        prepared = _prepare_data(data_cfg)
    if prepared.vocab_size > plan.shape.vocab_size:
        from train.data import DataError
        raise DataError(f"data.vocab_size: the prepared data has {prepared.vocab_size} token ids but the "
                        f"model's vocabulary is {plan.shape.vocab_size}")

    # One process per run directory: a second sweep started on the same directory skips the run.
    lock = _lock_run_dir(run_dir, world, device)
    if lock is None:
        if not cfg.sweep.name:
            raise RunLocked(f"{run_dir}: locked by another process ({RunLock(run_dir).holder()})")
        log.info(f"run {plan.run_id}: locked by another process ({RunLock(run_dir).holder()}); skipping: "
            "that process trains it")
        return None
    try:
        with run_log(run_dir) if world.is_main else contextlib.nullcontext():
            return _train_locked(cfg, plan, world, device, dtype, data_cfg, prepared, run_dir)
    finally:
        if lock is not True:
            lock.release()


def _lock_run_dir(run_dir: Path, world, device):
    """Rank 0 takes the run directory's lock; every rank learns whether it did. Returns the lock
    (True on other ranks), or None when another process holds it."""
    from train.run import distributed
    lock, held_elsewhere = True, 0.0
    if world.is_main:
        lock = RunLock(run_dir)
        try:
            lock.acquire()
        except RunLocked:
            lock, held_elsewhere = None, 1.0
    if world.size > 1:
        held_elsewhere = distributed.all_sum([held_elsewhere], world, device)[0]
        if held_elsewhere and lock not in (None, True):
            lock.release()
    return None if held_elsewhere else lock


def _done(cfg, finished: dict | None) -> bool:
    """Whether a run directory's result ends the matter: failed runs are always retried, diverged
    ones with retry_diverged=true."""
    if finished is None or finished["status"] == "failed":
        return False
    return not (finished["status"] == "diverged" and cfg.retry_diverged)


def _say_done(plan: RunPlan, finished: dict, run_dir: Path) -> None:
    hint = "; retry_diverged=true trains it again" if finished["status"] == "diverged" else ""
    log.info(f"run {plan.run_id}: already {finished['status']} in {run_dir}; nothing to do{hint}")


def _discard_run(run_dir: Path) -> None:
    """A diverged run, retried: its result goes first (so a crash here leaves a run that
    re-running trains), then its checkpoints; metrics.jsonl is truncated when training starts."""
    import shutil

    from train.run.checkpoint import checkpoint_dir
    (run_dir / "result.json").unlink(missing_ok=True)
    shutil.rmtree(checkpoint_dir(run_dir), ignore_errors=True)


def _finished(run_dir: Path, plan: RunPlan) -> dict | None:
    """The run directory's result, after checking that the directory belongs to this run."""
    owner = None
    try:
        owner = json.loads((run_dir / "plan.json").read_text()).get("run_id")
    except (OSError, ValueError, AttributeError):
        pass
    result = read_result(run_dir)
    owner = (result or {}).get("run_id") or owner
    if owner not in (None, plan.run_id) and (result is not None or list_checkpoints(run_dir)):
        raise ConfigError(f"out_dir: {run_dir} holds run {owner}, not {plan.run_id} (another config); "
                          "use another out_dir")
    return result


def _train_locked(cfg, plan, world, device, dtype, data_cfg, prepared, run_dir: Path) -> dict | None:
    import torch

    from train.run import distributed
    from train.run.device import describe, peak_flops
    from train.run.loop import Trainer
    from train.model import Transformer
    from train.run.optim import make_optimizer
    finished = _finished(run_dir, plan)  # another process may have finished it while we waited
    if _done(cfg, finished):
        _say_done(plan, finished, run_dir)
        return finished
    if world.is_main and finished is not None and finished["status"] == "diverged":  # retry_diverged=true
        log.info(f"run {plan.run_id}: retrying a diverged run from step 0 ({finished.get('reason')})")
        _discard_run(run_dir)
    if world.is_main:
        remove_temp_files(run_dir)  # left by atomic writes that a crash interrupted
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(run_dir / "config.yaml", scrub_secrets(OmegaConf.to_yaml(cfg, resolve=True)).encode())
        atomic_write_json(run_dir / "plan.json", plan.to_dict())
        atomic_write_json(run_dir / "env.json", environment(describe(device)) | {"world_size": world.size})

    torch.manual_seed(cfg.seed)
    model = Transformer(plan.shape, attention=cfg.model.attention).to(device)
    optimizer = make_optimizer(model, plan.lr, (cfg.optim.beta1, cfg.optim.beta2), cfg.optim.eps,
                               cfg.optim.weight_decay, fused=device.type == "cuda")
    trainer = Trainer(cfg=cfg, plan=plan, model=model, optimizer=optimizer, prepared=prepared, device=device,
                      dtype=dtype, world=world, run_dir=run_dir, peak_flops=peak_flops(device, cfg.peak_tflops))
    # In a sweep the plan already printed the repeats, run by run: each run only records them.
    epochs = check_repeats(plan.budget.tokens, trainer.batches.unique_tokens, data_cfg.repeat_policy,
                           quiet=bool(cfg.sweep.name) or not world.is_main)

    state = load_latest(run_dir)
    trunk = None
    if state is not None:
        log.info(f"run {plan.run_id}: resuming from step {int(state['step'])}/{plan.budget.steps}")
        trainer.load_state(state)
    elif plan.schedule.trunk_dir:  # a WSD branch: its cooldown starts from the trunk's checkpoint
        trunk = trunk_start(plan)
        if trunk["state"] is None:
            result = write_result(run_dir, plan, {"status": "diverged", "reason": trunk["reason"], "step": 0,
                                                  "tokens": 0, "val_loss": None, "train_loss": None, "wall_s": 0.0,
                                                  "train_wall_s": 0.0}) if world.is_main else None
            log.info(f"run {plan.run_id}: diverged ({trunk['reason']})")
            return result
        log.info(f"run {plan.run_id}: branching from trunk {trunk['run_id']} at step {trunk['step']}/{plan.budget.steps}")
        trainer.load_state(trunk.pop("state"), trunk_rows=trunk.pop("rows"))
        if world.is_main:
            atomic_write_json(run_dir / "trunk.json", trunk)
    elif world.is_main:
        MetricsLog(run_dir / "metrics.jsonl").truncate_after(-1)
    if state is not None and plan.schedule.trunk_dir:
        trunk = _branch_record(run_dir, plan)

    log.info(f"run {plan.run_id}: {plan.params.total:,} params ({plan.shape.n_layer}x{plan.shape.d_model}), "
        + (f"WSD trunk: to step {plan.end_step} of {plan.budget.steps} (its cooldown start), "
           if plan.schedule.is_trunk else "")
        + f"{plan.budget.tokens:,} tokens in {plan.budget.steps} steps of {plan.budget.batch_tokens:,}, "
        f"lr {plan.lr:.3g}, C={plan.budget.budget_flops:.3g} ({plan.budget.convention}) on {describe(device)} "
        f"[{str(dtype).removeprefix('torch.')}] -> {run_dir}")
    try:
        outcome = trainer.train()
    except Exception as error:
        # Recorded so that the sweep reruns it; no loss is recorded. A full disk is not the run's
        # fault, and writing there would fail anyway: re-running resumes once there is space.
        # A run stopped cleanly on a preemption signal (checkpoint saved) has not failed either.
        disk_full = isinstance(error, OSError) and error.errno in DISK_FULL
        if world.is_main and not disk_full and not getattr(error, "checkpoint_saved", False):
            try:
                atomic_write_json(run_dir / "result.json", {"status": "failed", "run_id": plan.run_id,
                                                            "reason": f"{type(error).__name__}: {error}"})
            except OSError:
                pass
        raise
    result = None
    if world.is_main:
        result = write_result(run_dir, plan, outcome | {"epochs": epochs}, trunk)
        def loss(value):
            return "n/a" if value is None else f"{value:.4f}"
        log.info(f"run {plan.run_id}: {result['status']}"
            + (f" ({result['reason']})" if result.get("reason") else "")
            + f"; final val loss {loss(result['final_val_loss'])}, train loss {loss(result['final_train_loss'])}, "
            f"{result['wall_s']:.1f}s")
    distributed.shutdown(world)
    return result


@contextmanager
def cli_errors():
    """`python -m train`'s failures as one `error: ...` line and an exit code (see the module doc)."""
    from train.run.checkpoint import CheckpointError
    from train.errors import USER_ERRORS

    def fail(message: str, code: int):
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(code)
    try:
        yield
    except USER_ERRORS as error:
        fail(str(error), EXIT_BAD_INPUT)
    except RunLocked as error:
        fail(f"out_dir: {error}; not starting a second copy", EXIT_BUSY)
    except CheckpointError as error:
        fail(f"checkpoints: {error}", 1)
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        where = f"{error.filename}: " if error.filename else ""
        fail(f"disk full: {where}{error.strerror}; nothing was recorded as finished; free space and run the "
             "same command again to resume from the last checkpoint", EXIT_DISK_FULL)


def _trunk_info(plan: RunPlan) -> dict:
    """A WSD branch's trunk: its directory, run id, branch step and wall time up to the branch step."""
    trunk_dir = Path(plan.schedule.trunk_dir)
    step = plan.budget.steps - plan.schedule.cooldown_steps
    try:
        trunk_plan = json.loads((trunk_dir / "plan.json").read_text())
    except (OSError, ValueError):
        trunk_plan = {}
    return {"trunk_dir": str(trunk_dir), "run_id": trunk_plan.get("run_id"), "step": step, "wall_s": None}


def _branch_record(run_dir: Path, plan: RunPlan) -> dict:
    """A resumed branch's trunk.json (written when it left its trunk), else what the trunk says now."""
    try:
        return json.loads((run_dir / "trunk.json").read_text())
    except (OSError, ValueError):
        return _trunk_info(plan)


def trunk_start(plan: RunPlan) -> dict:
    """The trunk's state at the branch step (checked against this branch's plan) and its metrics rows.
    state None with a reason: the trunk diverged before the branch step, so the branch cannot exist."""
    import torch

    from train.run.checkpoint import checkpoint_path
    info = _trunk_info(plan)
    trunk_dir, step = Path(info["trunk_dir"]), info["step"]
    path = checkpoint_path(trunk_dir, step)
    if not path.is_file():
        trunk_result = read_result(trunk_dir) or {}
        if trunk_result.get("status") == "diverged":
            return info | {"state": None, "reason": f"its trunk {trunk_dir} diverged before the branch step {step}: "
                                                   f"{trunk_result.get('reason')}"}
        raise ConfigError(f"wsd.trunk_dir: {trunk_dir} has no checkpoint at the branch step {step}; train the trunk "
                          "first (the sweep command trains every trunk before its branches)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if int(state.get("step", -1)) != step or state.get("shape") != plan.shape.to_dict():
        raise ConfigError(f"wsd.trunk_dir: {path} is not this branch's trunk (another shape or step)")
    if info["run_id"] is not None and state.get("run_id") != info["run_id"]:
        raise ConfigError(f"wsd.trunk_dir: {path} belongs to run {state.get('run_id')}, not the trunk "
                          f"{info['run_id']} of {trunk_dir}")
    if state["data"].get("global_batch_size") not in (None, plan.budget.batch_seqs):
        raise ConfigError(f"wsd.trunk_dir: {path} was trained with a batch of {state['data'].get('global_batch_size')} "
                          f"sequences, this branch with {plan.budget.batch_seqs}")
    info["run_id"] = state.get("run_id")
    info["wall_s"] = float(state.get("wall_s", 0.0))
    rows = MetricsLog(trunk_dir / "metrics.jsonl").rows() if (trunk_dir / "metrics.jsonl").exists() else []
    return info | {"state": state, "rows": rows}


def write_result(run_dir: Path, plan: RunPlan, outcome: dict, trunk: dict | None = None) -> dict:
    tokens = outcome["tokens"]
    result = {
        "status": outcome["status"],
        "reason": outcome.get("reason"),
        "run_id": plan.run_id,
        "seed": plan.seed,
        "budget_flops": plan.budget.budget_flops,
        "convention": plan.budget.convention,
        "params": plan.params.to_dict(),
        "shape": plan.shape.to_dict(),
        "tokens": tokens,
        "epochs": outcome.get("epochs"),  # passes over the training split's unique tokens
        "steps": outcome["step"],
        "flops": {name: per_token * tokens for name, per_token in plan.flops_per_token.items()},
        "lr": plan.lr,
        "final_val_loss": outcome["val_loss"],
        "final_val_bpb": outcome.get("val_bpb"),  # bits per UTF-8 byte of the same evaluation
        "final_train_loss": outcome["train_loss"],
        "wall_s": outcome["wall_s"],
        "train_wall_s": outcome["train_wall_s"],
    } | plan.schedule.to_dict()
    if trunk is not None:  # a WSD branch: which trunk it left, where, and what that stretch cost
        result |= {"trunk_run_id": trunk.get("run_id"), "branch_step": trunk.get("step"),
                   "trunk_wall_s": trunk.get("wall_s")}
    for key in ("final_val_loss", "final_val_bpb", "final_train_loss"):
        # A run that did not complete has no final loss: its last numbers are no result.
        if result[key] is not None and (not math.isfinite(result[key]) or result["status"] != "completed"):
            result[key] = None
    atomic_write_json(run_dir / "result.json", result)
    return result
