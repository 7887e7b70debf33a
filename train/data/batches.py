"""Batches over the token memmaps: a seeded, resumable training order and fixed validation batches.

Training windows
    train.bin's N tokens are cut into W = (N - 1) // T windows of T + 1 tokens, where T is
    seq_len; window j starts at token j*T (x = its first T tokens, y = its last T). Neighbouring
    windows share one token, so every token is a target exactly once per epoch: the corpus has
    ``unique_tokens = W * T`` training tokens.

Order
    Global sample k (k = 0, 1, 2, ...) is window ``perm_e[k % W]`` with e = k // W and
    ``perm_e = numpy.random.default_rng([seed, e]).permutation(W)``. The order is a pure function
    of (seed, W, k): the only state to save is the integer k, and a resumed run reads exactly the
    samples an uninterrupted run would.

Steps and sharding (DDP)
    Optimizer step s takes the G = ``global_batch_size`` samples [s*G, (s+1)*G). Rank r of
    ``world_size`` takes the contiguous slice [s*G + r*G/ws, s*G + (r+1)*G/ws) and cuts it, in
    order, into micro-batches of ``micro_batch_size`` (gradient accumulation steps = G / (ws*mb)).
    So a step's samples are the same for every world size and micro-batch size; with a loss
    averaged over the global batch the update is the same too (up to float summation order).
"""

from __future__ import annotations

import os
import warnings
from typing import Iterator

import numpy as np

from train.logs import get_logger
from .errors import DataError, RepeatedDataWarning


def _open_tokens(path: str | os.PathLike, dtype: str | np.dtype, what: str) -> np.memmap:
    dtype = np.dtype(dtype)
    if not os.path.isfile(path):
        raise DataError(f"data: missing data file {path} ({what})")
    size = os.path.getsize(path)
    if size % dtype.itemsize:
        raise DataError(f"data: {path} has {size} bytes, not a whole number of {dtype.name} tokens")
    if size == 0:
        raise DataError(f"data: {path} is empty ({what} has no tokens)")
    return np.memmap(path, dtype=dtype, mode="r")


def _to_torch(arr: np.ndarray, pin_memory: bool):
    import torch

    t = torch.from_numpy(arr.astype(np.int64, copy=False))
    if pin_memory and torch.cuda.is_available():
        t = t.pin_memory()
    return t


def _gather(data: np.memmap, starts: np.ndarray, seq_len: int, pin_memory: bool):
    rows = np.stack([np.asarray(data[s:s + seq_len + 1]) for s in starts.tolist()])
    return _to_torch(rows[:, :-1], pin_memory), _to_torch(rows[:, 1:], pin_memory)


class TokenBatches:
    """Training batches over ``train.bin``; see the module docstring for the order and sharding.

    Random access: ``batch(step, micro_step)`` returns this rank's (x, y) LongTensors of shape
    (micro_batch_size, seq_len) on the CPU. Iteration: ``next(it)`` walks (step, micro_step) in
    order; ``state_dict()`` holds the global sample position, ``load_state_dict()`` restores it.
    """

    def __init__(self, path: str | os.PathLike, dtype: str | np.dtype, seq_len: int,
                 global_batch_size: int, micro_batch_size: int | None = None, *, rank: int = 0,
                 world_size: int = 1, seed: int = 0, pin_memory: bool = False,
                 vocab_size: int | None = None):
        if seq_len < 1 or global_batch_size < 1:
            raise ValueError(f"seq_len ({seq_len}) and global_batch_size ({global_batch_size}) must be >= 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if global_batch_size % world_size:
            raise ValueError(f"global_batch_size {global_batch_size} is not divisible by world_size {world_size}")
        per_rank = global_batch_size // world_size
        mb = per_rank if micro_batch_size is None else micro_batch_size
        if mb < 1 or per_rank % mb:
            raise ValueError(f"micro_batch_size {mb} does not divide the per-rank batch {per_rank} "
                             f"(global_batch_size {global_batch_size} / world_size {world_size})")
        self.path = str(path)
        self.data = _open_tokens(path, dtype, "the training split")
        self.seq_len = seq_len
        self.global_batch_size = global_batch_size
        self.micro_batch_size = mb
        self.rank, self.world_size = rank, world_size
        self.accum_steps = per_rank // mb
        self.seed = seed
        self.pin_memory = pin_memory
        self.vocab_size = vocab_size
        self.n_tokens = len(self.data)
        self.n_windows = (self.n_tokens - 1) // seq_len
        if self.n_windows < global_batch_size:
            raise DataError(
                f"data: the training split has {self.n_tokens:,} tokens, fewer than one global batch of "
                f"{global_batch_size} sequences of {seq_len}+1 tokens; use a larger corpus or a smaller batch")
        if vocab_size is not None and self.n_tokens <= 100_000_000:  # a cheap scan (~1 ms per 3M)
            top = int(self.data.max())
            if top >= vocab_size:
                raise DataError(f"data.vocab_size: {path} holds token id {top}, not below the "
                                f"vocabulary size {vocab_size}")
        self._perms: dict[int, np.ndarray] = {}
        self.sample = 0  # iterator position: the global sample where the next micro-batch starts

    # -- sizes ------------------------------------------------------------------------------
    @property
    def unique_tokens(self) -> int:
        """Distinct training targets per epoch (W * seq_len): more tokens than this repeat data."""
        return self.n_windows * self.seq_len

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_len

    def epochs(self, steps: int) -> float:
        """How many passes over the training split ``steps`` optimizer steps make."""
        return steps * self.global_batch_size / self.n_windows

    # -- order ------------------------------------------------------------------------------
    def _perm(self, epoch: int) -> np.ndarray:
        p = self._perms.get(epoch)
        if p is None:
            p = np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)
            if len(self._perms) >= 2:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = p
        return p

    def windows(self, samples: np.ndarray) -> np.ndarray:
        """Window index of each global sample index."""
        samples = np.asarray(samples, dtype=np.int64)
        out = np.empty_like(samples)
        epochs = samples // self.n_windows
        for e in np.unique(epochs).tolist():
            m = epochs == e
            out[m] = self._perm(e)[samples[m] % self.n_windows]
        return out

    def samples(self, step: int, micro_step: int = 0) -> np.ndarray:
        """Global sample indices of this rank's micro-batch ``micro_step`` of optimizer step ``step``."""
        if not 0 <= micro_step < self.accum_steps:
            raise ValueError(f"micro_step {micro_step} is not in [0, accum_steps={self.accum_steps})")
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        per_rank = self.global_batch_size // self.world_size
        start = step * self.global_batch_size + self.rank * per_rank + micro_step * self.micro_batch_size
        return np.arange(start, start + self.micro_batch_size, dtype=np.int64)

    def batch(self, step: int, micro_step: int = 0):
        """(x, y) int64 tensors of shape (micro_batch_size, seq_len); y is x shifted by one token."""
        starts = self.windows(self.samples(step, micro_step)) * self.seq_len
        return _gather(self.data, starts, self.seq_len, self.pin_memory)

    # -- iteration and resume ---------------------------------------------------------------
    @property
    def position(self) -> tuple[int, int]:
        """(step, micro_step) of the next micro-batch the iterator returns."""
        step, rem = divmod(self.sample, self.global_batch_size)
        return step, rem // (self.micro_batch_size * self.world_size)

    def __iter__(self) -> Iterator:
        return self

    def __next__(self):
        x, y = self.batch(*self.position)
        self.sample += self.micro_batch_size * self.world_size
        return x, y

    def state_dict(self) -> dict:
        """Plain ints: the global sample position, plus what must match to resume."""
        return {"sample": int(self.sample), "seed": int(self.seed), "seq_len": int(self.seq_len),
                "n_windows": int(self.n_windows), "global_batch_size": int(self.global_batch_size)}

    def load_state_dict(self, state: dict) -> None:
        for k in ("seed", "seq_len", "n_windows", "global_batch_size"):
            if k in state and int(state[k]) != getattr(self, k):
                raise DataError(f"data: cannot resume: the saved data position has {k}={state[k]}, "
                                f"this run has {getattr(self, k)} (different data or batch config)")
        sample = int(state["sample"])
        if sample < 0 or sample % (self.micro_batch_size * self.world_size):
            raise DataError(f"data: cannot resume at sample {sample}: not a micro-batch boundary for "
                            f"micro_batch_size={self.micro_batch_size} x world_size={self.world_size}")
        self.sample = sample

    def seek(self, step: int) -> None:
        """Put the iterator at the start of optimizer step ``step``."""
        self.sample = step * self.global_batch_size


class ValBatches:
    """Fixed validation batches: the first windows of ``val.bin`` (stride seq_len, as in
    training), ``batch_size`` per batch, at most ``max_batches`` batches (None: all that fit).
    If val.bin holds fewer than ``batch_size`` windows there is one smaller batch.
    Batch i goes to rank ``i % world_size``: sum the loss over tokens and all-reduce."""

    def __init__(self, path: str | os.PathLike, dtype: str | np.dtype, seq_len: int, batch_size: int,
                 max_batches: int | None = None, *, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False):
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len ({seq_len}) and batch_size ({batch_size}) must be >= 1")
        self.data = _open_tokens(path, dtype, "the validation split")
        self.seq_len, self.pin_memory = seq_len, pin_memory
        n_windows = (len(self.data) - 1) // seq_len
        if n_windows < 1:
            raise DataError(f"data.val_fraction: the validation split has {len(self.data)} tokens, "
                            f"fewer than one sequence of {seq_len}+1; raise data.val_fraction")
        rows = min(batch_size, n_windows)
        n_batches = n_windows // rows
        if max_batches is not None:
            n_batches = min(n_batches, max_batches)
        self.batch_size, self.n_batches = rows, n_batches
        self._mine = list(range(rank, n_batches, world_size))

    @property
    def n_tokens(self) -> int:
        """Target tokens in all batches (all ranks)."""
        return self.n_batches * self.batch_size * self.seq_len

    def batch(self, i: int):
        starts = np.arange(i * self.batch_size, (i + 1) * self.batch_size, dtype=np.int64) * self.seq_len
        return _gather(self.data, starts, self.seq_len, self.pin_memory)

    def __len__(self) -> int:
        return len(self._mine)

    def __iter__(self):
        for i in self._mine:
            yield self.batch(i)


def check_repeats(tokens_needed: int, unique_tokens: int, policy: str = "warn", quiet: bool = False) -> float:
    """Epochs over the training split that ``tokens_needed`` implies. Above 1 the run repeats
    data, which biases IsoFLOP curves: warn (one line on stderr, unless ``quiet``, and a
    RepeatedDataWarning) or, with policy "refuse", raise DataError."""
    if policy not in ("warn", "refuse"):
        raise DataError(f"data.repeat_policy: unknown policy {policy!r} (choose one of warn, refuse)")
    if unique_tokens <= 0:
        raise DataError(f"data: the training split has no usable tokens ({unique_tokens})")
    epochs = tokens_needed / unique_tokens
    if tokens_needed > unique_tokens:
        msg = (f"the run needs {tokens_needed:,} training tokens but the corpus has {unique_tokens:,} "
               f"unique ones ({epochs:.2f} epochs): repeated data biases the IsoFLOP curve")
        if policy == "refuse":
            raise DataError(f"data.repeat_policy=refuse: {msg}; lower the budget, use a larger corpus, "
                            "or set data.repeat_policy=warn")
        if not quiet:
            get_logger("data").warning(msg)
        warnings.warn(msg, RepeatedDataWarning, stacklevel=2)
    return epochs
