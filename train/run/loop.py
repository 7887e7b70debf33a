"""The training loop of one run: steps, evaluation, logging, checkpoints, divergence checks,
and a clean stop with a checkpoint on preemption (SIGTERM, SIGUSR1, SIGUSR2)."""
from __future__ import annotations

import contextlib
import json
import math
import signal
import statistics
import threading
import time
from pathlib import Path

import torch

from train.logs import get_logger
from train.run import distributed, faults
from train.run.checkpoint import save_checkpoint
from train.plan.errors import ConfigError
from train.plan.flops import model_flops_per_token
from train.run.optim import lr_at
from train.run.rundir import MetricsLog, atomic_write_bytes, scrub_secrets
from train.run.exit_codes import EXIT_PREEMPTED  # 75, sysexits' EX_TEMPFAIL: a temporary stop; run it again

log = get_logger("run")

# Preemption. SLURM sends SIGTERM when it preempts or cancels a job (then SIGKILL after its
# KillWait/GraceTime), and --signal=USR1/USR2@T before the time limit (submitit uses USR2). On
# any of these the loop finishes its current step, saves a checkpoint and exits with
# EXIT_PREEMPTED; the same command resumes from that checkpoint.
PREEMPT_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class Preempted(SystemExit):
    """The run stopped at a step boundary on a preemption signal, its checkpoint saved.

    A SystemExit, so that Hydra's job runner and submitit's job wrapper let it through untouched
    (they catch Exception): no `failed` result.json, no submitit result pickle, and the process
    exits with EXIT_PREEMPTED and no traceback.
    """

    def __init__(self, signum: int, step: int):
        super().__init__(EXIT_PREEMPTED)
        self.signum, self.step = signum, step


class StopSignals:
    """Records a preemption signal; the loop acts on it at the next step boundary.

    Handlers that were installed before ours are kept and run after our checkpoint is saved
    (`chain`): under submitit on SLURM that is its USR2 handler, which pickles the job, runs
    `scontrol requeue` and exits, so the requeued job finds our checkpoint and resumes.
    """

    def __init__(self):
        self.received: int | None = None
        self.received_at = 0.0
        self.previous: dict[int, object] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in PREEMPT_SIGNALS:
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.received is None:
            self.received, self.received_at = signum, time.time()

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self.previous = {}

    def chain(self) -> None:
        handler = self.previous.get(self.received)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(self.received, None)


def largest_divisor_at_most(n: int, limit: int) -> int:
    """Micro-batch size: the largest divisor of the per-rank batch that fits the requested size."""
    return max(d for d in range(1, min(n, max(1, limit)) + 1) if n % d == 0)


def _format_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Trainer:
    def __init__(self, cfg, plan, model, optimizer, prepared, device, dtype, world, run_dir: Path, peak_flops):
        self.cfg, self.plan, self.device, self.dtype, self.world = cfg, plan, device, dtype, world
        self.run_dir, self.peak_flops = run_dir, peak_flops
        self.raw_model, self.optimizer = model, optimizer
        budget = plan.budget
        self.total_steps = plan.end_step  # a WSD trunk stops at its last branch step
        local_seqs = budget.batch_seqs // world.size
        micro = largest_divisor_at_most(local_seqs, plan.micro_batch_seqs)  # sized to the device (train/plan/memory.py)
        self.prepared = prepared
        # UTF-8 bytes per token id (0 for end-of-text): the bits-per-byte denominator
        self.token_bytes = torch.from_numpy(prepared.token_bytes(plan.shape.vocab_size))
        self.batches = prepared.train_batches(plan.shape.seq_len, budget.batch_seqs, micro,
                                              rank=world.rank, world_size=world.size, seed=cfg.seed,
                                              pin_memory=device.type == "cuda")
        # The validation set is the same sequences for every world size and micro-batch size:
        # its batch size divides the number of sequences, so none are dropped by rounding.
        val_windows = prepared.val_batches(plan.shape.seq_len, 1).n_batches
        eval_seqs = min(max(1, cfg.eval_tokens // plan.shape.seq_len), val_windows)
        eval_batch = largest_divisor_at_most(eval_seqs, micro)
        self.val = prepared.val_batches(plan.shape.seq_len, eval_batch, eval_seqs // eval_batch,
                                        rank=world.rank, world_size=world.size)
        self.metrics = MetricsLog(run_dir / "metrics.jsonl")
        # Every evaluation reads the same sequences (all eval_tokens), so a run's validation curve
        # is one quantity from start to end (Approach 1 reads it). The ones before the last only
        # draw the curve, so together they may cost at most eval_fraction of the training compute
        # (an eval token is a forward pass, a third of a training token's 6N): where the requested
        # interval would exceed that, it is stretched to a whole multiple of itself.
        requested = cfg.eval_every or max(1, self.total_steps // 10)
        affordable = int(3 * cfg.eval_fraction * budget.tokens // (eval_seqs * plan.shape.seq_len))
        wanted = (self.total_steps - 1) // requested
        stretch = 1 if wanted <= affordable else (-(-wanted // affordable) if affordable > 0 else None)
        self.eval_every = requested * stretch if stretch else self.total_steps  # None: the final one only
        self.log_every = cfg.log_every or max(1, self.total_steps // 20)
        self.step = 0            # optimizer steps completed
        self.wall_before = 0.0   # wall seconds spent before a resume
        self.last_val_loss = None
        self.last_val_bpb = None
        self.last_train_loss = None
        # the loss-spike check (_divergence): the last divergence_window train losses, the lowest
        # moving median so far, and how many consecutive steps the median has been far above it
        self.recent_losses: list[float] = []
        self.lowest_median = None
        self.spike_steps = 0

        # DDP wraps the plain model and torch.compile wraps DDP, as torch's guide to compiling
        # DDP models says: Dynamo's DDPOptimizer then splits the graph at DDP's bucket boundaries
        # so that the gradient all-reduce overlaps the backward.
        model_for_step = model
        self.ddp = None
        if world.size > 1:
            from torch.nn.parallel import DistributedDataParallel
            self.ddp = model_for_step = DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None)
        if cfg.compile if cfg.compile is not None else device.type == "cuda":
            model_for_step = torch.compile(model_for_step)
        self.model = model_for_step
        self.logger = self._make_logger()

    # --- state -----------------------------------------------------------------------------
    def state(self) -> dict:
        self.batches.seek(self.step)
        return {"model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                "data": self.batches.state_dict(), "rng_cpu": torch.get_rng_state(),
                "wall_s": self.wall_before + (time.time() - self.started), "shape": self.plan.shape.to_dict(),
                "run_id": self.plan.run_id, "last_val_loss": self.last_val_loss, "last_val_bpb": self.last_val_bpb,
                "last_train_loss": self.last_train_loss, "recent_losses": list(self.recent_losses),
                "lowest_median": self.lowest_median, "spike_steps": self.spike_steps}

    def load_state(self, state: dict, trunk_rows: list[dict] | None = None) -> None:
        """Resume from this run's checkpoint, or (trunk_rows given) start a WSD branch from its
        trunk's checkpoint at the branch step, the trunk's metrics up to there copied in."""
        if trunk_rows is not None:
            self._load_from_trunk(state, trunk_rows)
            return
        if state.get("run_id") != self.plan.run_id:
            raise ConfigError(f"out_dir: its checkpoint belongs to run {state.get('run_id')}, not "
                              f"{self.plan.run_id} (another config); use another out_dir")
        self._load_training_state(state)
        self.wall_before = float(state["wall_s"])
        if self.world.is_main:
            self.metrics.truncate_after(self.step)

    def _load_from_trunk(self, state: dict, trunk_rows: list[dict]) -> None:
        self._load_training_state(state)
        self.wall_before = 0.0  # the branch's own time; its trunk's is recorded beside it (trunk_wall_s)
        if self.world.is_main:
            kept = [row for row in trunk_rows if row.get("step", -1) <= self.step]
            atomic_write_bytes(self.metrics.path, "".join(json.dumps(row) + "\n" for row in kept).encode())

    def _load_training_state(self, state: dict) -> None:
        """Weights, optimizer, data position, RNG, the last losses and the divergence check's state."""
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.batches.load_state_dict(state["data"])
        torch.set_rng_state(state["rng_cpu"])
        self.step = int(state["step"])
        if self.batches.position != (self.step, 0):
            raise ValueError(f"checkpoint: data position {self.batches.position} does not match step {self.step}")
        self.last_val_loss, self.last_train_loss = state.get("last_val_loss"), state.get("last_train_loss")
        self.last_val_bpb = state.get("last_val_bpb")
        self.recent_losses = [float(x) for x in state.get("recent_losses", [])]
        self.lowest_median, self.spike_steps = state.get("lowest_median"), int(state.get("spike_steps", 0))

    def _make_logger(self):
        if not self.world.is_main or self.cfg.wandb.mode == "disabled":
            return None
        from omegaconf import OmegaConf
        from train.tracking.wandb_log import WandbLogger
        wb = self.cfg.wandb
        budget = self.plan.budget.budget_flops
        group = wb.group or self.cfg.sweep.name
        name = wb.name or f"N{self.plan.params.total / 1e6:.3g}M-C{budget:.2g}"
        tags = list(wb.tags) + [f"C={budget:.3g}", f"N={self.plan.params.total:.3g}"]
        job_type = "isoflop-run"
        schedule = self.plan.schedule
        if schedule.is_trunk or schedule.trunk_dir:  # WSD: a trunk and its branches share one group per size
            group = f"{group or 'wsd'}-N{self.plan.params.total:.3g}"
            job_type = "wsd-trunk" if schedule.is_trunk else "wsd-branch"
            if schedule.is_trunk:
                name = wb.name or f"N{self.plan.params.total / 1e6:.3g}M-trunk"
            tags.append(f"schedule={schedule.name}")
        config = OmegaConf.to_container(self.cfg, resolve=True) | {"plan": self.plan.to_dict()}
        config, group, name, tags = scrub_secrets([config, group, name, tags])  # no API key via ${oc.env:...}
        return WandbLogger(mode=wb.mode, project=wb.project, group=group, name=name, config=config,
                           run_dir=str(self.run_dir), tags=tags, job_type=job_type, run_id=self.plan.run_id)

    # --- one step --------------------------------------------------------------------------
    def _autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def _train_step(self, lr: float) -> float:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        micro_batches = [self.batches.batch(self.step, m) for m in range(self.batches.accum_steps)]
        total_seqs = sum(x.shape[0] for x, _ in micro_batches)
        loss_sum = 0.0
        for i, (x, y) in enumerate(micro_batches):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            last = i == len(micro_batches) - 1
            # Under DDP, gradients accumulate locally on every micro-batch but the last, whose
            # backward all-reduces them: a fresh no_sync() context around each such forward and
            # backward (a context manager object can be entered once only).
            sync = self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()
            with sync:
                with self._autocast():
                    loss = self.model(x, y)
                # Weight each micro-batch by its share of the sequences: the step's loss is the
                # mean over all of its tokens even when micro-batches differ in size.
                (loss * (x.shape[0] / total_seqs)).backward()
            loss_sum += loss.detach().float() * (x.shape[0] / total_seqs)
        faults.hit("step", step=self.step + 1)  # gradients computed, optimizer step not yet taken
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return distributed.all_mean(float(loss_sum), self.world, self.device)

    def _first_step(self, lr: float) -> float:
        """The first step of this process; on CUDA out of memory in its forward or backward, halve
        the micro-batch and take it again. The global batch, and so the result, stay the same."""
        entered = []
        def before_update(*_):
            faults.hit("first-step")  # gradients computed, optimizer update not yet started
            entered.append(True)
        hook = self.optimizer.register_step_pre_hook(before_update)
        try:
            while True:
                try:
                    loss = self._train_step(lr)
                    if self.device.type == "cuda" and self.world.is_main:  # the memory model's check
                        log.info(f"first step: peak memory {torch.cuda.max_memory_allocated(self.device) / 2**30:.1f} GiB "
                                 f"at a micro-batch of {self.batches.micro_batch_size} (planned: "
                                 f"{self.plan.micro_batch_seqs}, estimated {self.plan.est_peak_memory_gb} GiB)")
                    return loss
                except torch.cuda.OutOfMemoryError:
                    micro = self.batches.micro_batch_size
                    if entered or micro == 1 or self.world.size > 1:
                        raise  # in the optimizer update, already one sequence, or ranks out of step
                    self._halve_micro_batch(micro)
        finally:
            hook.remove()

    def _halve_micro_batch(self, micro: int) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        local_seqs = self.plan.budget.batch_seqs // self.world.size
        smaller = largest_divisor_at_most(local_seqs, micro // 2)
        self.batches = self.prepared.train_batches(self.plan.shape.seq_len, self.plan.budget.batch_seqs, smaller,
                                                   rank=self.world.rank, world_size=self.world.size,
                                                   seed=self.cfg.seed, pin_memory=self.device.type == "cuda")
        self.batches.seek(self.step)
        log.warning(f"out of memory at a micro-batch of {micro} sequences; retrying step {self.step + 1} "
                    f"with {smaller} x {local_seqs // smaller} accumulation steps (global batch unchanged)")

    @torch.no_grad()
    def evaluate(self, final: bool = True) -> float:
        """Mean validation loss per token over all eval_tokens (the same sequences every time;
        `final` is kept for callers). Sets last_val_bpb: the same summed loss in bits over the
        UTF-8 bytes of the evaluated text, comparable across tokenizers."""
        self.raw_model.eval()
        total, count, n_bytes = 0.0, 0, 0
        for x, y in self.val:
            n_bytes += int(self.token_bytes[y].sum())
            x, y = x.to(self.device), y.to(self.device)
            with self._autocast():
                total += float(self.raw_model(x, y)) * x.numel()
            count += x.numel()
            if count == x.numel():
                faults.hit("eval", step=self.step)
        self.raw_model.train()
        total, count, n_bytes = distributed.all_sum([total, count, n_bytes], self.world, self.device)
        self.last_val_bpb = total / (math.log(2) * n_bytes) if n_bytes else None
        return total / count

    # --- the loop --------------------------------------------------------------------------
    def train(self) -> dict:
        plan = self.plan
        batch_tokens = plan.budget.batch_tokens
        flops_per_token = plan.flops_per_token[plan.budget.convention]
        mfu_flops_per_token = model_flops_per_token(plan.shape)  # what a step computes (train/plan/flops.py)
        self.started = time.time()
        self.raw_model.train()
        stop = StopSignals()
        stop.install()
        try:
            return self._loop(stop, batch_tokens, flops_per_token, mfu_flops_per_token)
        finally:
            stop.restore()

    def _loop(self, stop: StopSignals, batch_tokens: int, flops_per_token: float, mfu_flops_per_token: float) -> dict:
        plan, opt = self.plan, self.cfg.optim
        train_wall = 0.0
        first_step = self.step
        last_checkpoint = time.time()
        status, reason = "completed", None
        while self.step < self.total_steps:
            # step
            lr = lr_at(self.step, plan.budget.steps, plan.lr, plan.warmup_steps, opt.final_lr_fraction,
                       plan.schedule.name, plan.schedule.cooldown_steps)
            t0 = time.perf_counter()
            train_loss = self._train_step(lr) if self.step > first_step else self._first_step(lr)
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            train_wall += dt
            self.step += 1
            self.last_train_loss = train_loss
            tokens = self.step * batch_tokens
            row = {"step": self.step, "tokens": tokens, "flops": tokens * flops_per_token, "lr": lr,
                   "train_loss": train_loss, "tokens_per_s": batch_tokens / dt}
            if self.peak_flops:
                row["mfu"] = batch_tokens / dt * mfu_flops_per_token / (self.peak_flops * self.world.size)

            # divergence: a non-finite loss, or a loss spike held for several steps, ends the run;
            # the sweep goes on without it
            reason = self._divergence(train_loss)
            if reason:
                status = "diverged"

            # eval
            if status == "completed" and (self.step % self.eval_every == 0 or self.step == self.total_steps):
                self.last_val_loss = self.evaluate(final=self.step == self.total_steps)
                row["val_loss"] = self.last_val_loss
                row["val_bpb"] = self.last_val_bpb

            # log
            if self.world.is_main:
                self.metrics.append(row)
                if self.logger is not None:
                    self.logger.log({"tokens": tokens, "flops": row["flops"], "step": self.step,
                                     "train/loss": train_loss, "train/lr": lr,
                                     "train/tokens_per_s": row["tokens_per_s"]}
                                    | ({"val/loss": row["val_loss"], "val/bpb": row["val_bpb"]} if "val_loss" in row else {})
                                    | ({"train/mfu": row["mfu"]} if "mfu" in row else {}))
                if self.step % self.log_every == 0 or self.step == self.total_steps or "val_loss" in row:
                    self._progress(row, train_wall / (self.step - first_step))
            if status != "completed":
                break

            # checkpoint
            due_by_steps = self.cfg.checkpoint_every and self.step % self.cfg.checkpoint_every == 0
            due_by_time = time.time() - last_checkpoint >= self.cfg.checkpoint_minutes * 60
            branch_point = self.step in plan.schedule.branch_steps  # a WSD trunk keeps these for its branches
            saved = False
            if (due_by_steps or due_by_time or branch_point or self.step == self.total_steps) and self.world.is_main:
                save_checkpoint(self.run_dir, self.step, self.state(), keep=plan.schedule.branch_steps)
                last_checkpoint, saved = time.time(), True

            # preemption: stop here, at a step boundary, with a checkpoint
            if self.step < self.total_steps and self._stop_requested(stop):
                self._preempt(stop, saved)

        wall = self.wall_before + time.time() - self.started
        if self.logger is not None:
            # the runs table's columns: the run's final numbers
            self.logger.summary({"status": status, "final_val_loss": self.last_val_loss,
                                 "final_val_bpb": self.last_val_bpb, "final_train_loss": self.last_train_loss,
                                 "tokens": self.step * batch_tokens, "flops": self.step * batch_tokens * flops_per_token})
            self.logger.finish(exit_code=0 if status == "completed" else 1)
        return {"status": status, "reason": reason, "step": self.step, "tokens": self.step * batch_tokens,
                "val_loss": self.last_val_loss, "val_bpb": self.last_val_bpb, "train_loss": self.last_train_loss,
                "wall_s": wall,
                "train_wall_s": train_wall}

    def _divergence(self, train_loss: float) -> str | None:
        """Why the run has diverged after this step's loss, or None.

        A non-finite loss is divergence at once. Otherwise one batch's loss says little: on a mixed
        corpus (code beside prose) an easy batch can sit at a third of the typical loss. So the
        check smooths first, with the median of the last divergence_window losses, and compares
        that median with its own lowest value so far: the run has diverged when the median stays
        above divergence_factor x that level for divergence_patience consecutive steps.
        """
        if not math.isfinite(train_loss):
            return f"non-finite train loss {train_loss} at step {self.step}"
        factor, patience = self.cfg.divergence_factor, self.cfg.divergence_patience
        self.recent_losses = (self.recent_losses + [train_loss])[-self.cfg.divergence_window:]
        median = statistics.median(self.recent_losses)
        if self.lowest_median is None or median < self.lowest_median:
            self.lowest_median = median
        if factor > 0 and median > factor * self.lowest_median:
            self.spike_steps += 1
            if self.spike_steps >= patience:
                return (f"loss spike: the median train loss of the last {len(self.recent_losses)} steps, "
                        f"{median:.4g}, stayed above {factor:g}x its lowest value ({self.lowest_median:.4g}) "
                        f"for {self.spike_steps} consecutive steps, at step {self.step}")
        else:
            self.spike_steps = 0
        return None

    def _stop_requested(self, stop: StopSignals) -> bool:
        requested = stop.received is not None
        if self.world.size > 1:  # every rank stops at the same step, or the collectives hang
            requested = distributed.all_sum([float(requested)], self.world, self.device)[0] > 0
        return requested

    def _preempt(self, stop: StopSignals, saved: bool) -> None:
        """Save a checkpoint (unless this step just did), hand over to any earlier handler, exit."""
        if self.world.is_main and not saved:
            save_checkpoint(self.run_dir, self.step, self.state(), keep=self.plan.schedule.branch_steps)
        signum = stop.received if stop.received is not None else signal.SIGTERM
        name = signal.Signals(signum).name
        waited = time.time() - stop.received_at if stop.received_at else 0.0
        if self.logger is not None:
            self.logger.finish(exit_code=EXIT_PREEMPTED)
        log.info(f"run {self.plan.run_id}: {name}: stopped at step {self.step}/{self.total_steps} with a checkpoint "
                 f"{waited:.1f}s after the signal; exit code {EXIT_PREEMPTED}; run the same command to resume")
        try:
            stop.chain()  # under submitit: its requeue (which exits); elsewhere nothing
        except Exception as error:  # submitit declines to requeue (UncompletedJobError): the job ends,
            error.checkpoint_saved = True  # but the run has not failed; re-running resumes it
            raise
        raise Preempted(signum, self.step)

    def _progress(self, row: dict, seconds_per_step: float) -> None:
        done = self.step / self.total_steps
        eta = seconds_per_step * (self.total_steps - self.step)
        parts = [f"step {self.step}/{self.total_steps}", f"tokens {row['tokens']:,}", f"loss {row['train_loss']:.4f}"]
        if "val_loss" in row:
            parts.append(f"val {row['val_loss']:.4f}")
        parts += [f"lr {row['lr']:.2e}", f"{row['tokens_per_s']:,.0f} tok/s"]
        if "mfu" in row:
            parts.append(f"mfu {row['mfu']:.1%}")
        parts.append(f"{done:.0%} eta {_format_duration(eta)}")
        log.info(" | ".join(parts))
