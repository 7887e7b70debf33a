"""Corpus -> tokenizer -> flat token memmaps ``train.bin``/``val.bin`` + ``meta.json``, cached.

Steps (``prepare_data``):
1. Fingerprint the corpus content and the tokenizer config: the cache key. If
   ``<cache>/data/<name>-<key>/meta.json`` exists, check it and return it (no heavy imports).
2. Load the corpus with `datasets` (one document per row), hold out whole documents for
   validation: a seeded permutation of the documents, taken until ``val_fraction`` of the
   characters is reached (at least one document on each side).
3. Train the byte-level BPE on the training documents only (or load GPT-2 / a file / a Hugging
   Face tokenizer).
4. Tokenize with ``Dataset.map(batched=True, num_proc=...)``; every document ends with the
   end-of-text token, so documents never run into each other without a separator. The ids are
   stored in the memmap's dtype from the start (the Arrow column is a list of uint16 or uint32).
5. Write each split, in the corpus's document order, as one flat array: uint16 when the
   vocabulary fits (< 65,536 ids), else uint32. Everything is written into a temporary folder that
   is renamed into place, so concurrent callers (DDP ranks) and interrupted runs never see a
   half-written cache entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import paths as P
from .config import DataConfig
from .corpora import check_hub_if_uncached, fingerprint, load_corpus, log, sha256_file, _procs
from .errors import DataError
from .tokenizer import EOS, HubTokenizerNotCached, build_tokenizer, eos_id, hub_tokenizer, tokenizer_spec

META_FORMAT = 1
# Bump when the preparation changes in a way that changes the tokens: it is part of the key.
PIPELINE_VERSION = "prepare-v1"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 holds ids up to 65,535, so it serves any vocabulary of at most 65,536 entries."""
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


@dataclass(frozen=True)
class PreparedData:
    """A prepared corpus on disk. Paths are absolute strings."""

    dir: str
    train_path: str
    val_path: str
    meta_path: str
    tokenizer_path: str
    dtype: str  # "uint16" | "uint32"
    vocab_size: int  # the model's vocabulary: every token id is < vocab_size
    eos_id: int
    n_train_tokens: int
    n_val_tokens: int
    cache_key: str
    meta: dict = field(default_factory=dict, compare=False, repr=False)

    def train_batches(self, seq_len: int, global_batch_size: int, micro_batch_size: int | None = None,
                      *, rank: int = 0, world_size: int = 1, seed: int = 0, pin_memory: bool = False):
        """A `TokenBatches` over train.bin (see batches.py)."""
        from .batches import TokenBatches

        return TokenBatches(self.train_path, self.dtype, seq_len, global_batch_size, micro_batch_size,
                            rank=rank, world_size=world_size, seed=seed, pin_memory=pin_memory,
                            vocab_size=self.vocab_size)

    def val_batches(self, seq_len: int, batch_size: int, max_batches: int | None = None, *,
                    rank: int = 0, world_size: int = 1, pin_memory: bool = False):
        """A `ValBatches`: the first windows of val.bin, the same every time (see batches.py)."""
        from .batches import ValBatches

        return ValBatches(self.val_path, self.dtype, seq_len, batch_size, max_batches, rank=rank,
                          world_size=world_size, pin_memory=pin_memory)

    def token_bytes(self, size: int | None = None) -> np.ndarray:
        """UTF-8 bytes per token id (0 for end-of-text), `size` entries (default vocab_size):
        bits per byte = summed loss in nats / (ln 2 x the evaluated tokens' bytes)."""
        from .tokenizer import token_byte_lengths

        return token_byte_lengths(self.tokenizer(), size or self.vocab_size)

    def tokenizer(self) -> Any:
        from .tokenizer import load_tokenizer

        return load_tokenizer(self.tokenizer_path)

    def check_vocab(self, model_vocab_size: int) -> None:
        """Raise DataError if a model with this vocabulary cannot embed every token of the data."""
        if model_vocab_size < self.vocab_size:
            raise DataError(f"data.vocab_size: the model's vocabulary ({model_vocab_size}) is smaller "
                            f"than the prepared data's ({self.vocab_size}, {self.meta_path})")


def cache_key(cfg: DataConfig, corpus_fingerprint: str | None = None, *, download: bool = True) -> str:
    """sha256 of the corpus content fingerprint and everything that changes the tokens.
    ``download=False``: a Hub tokenizer (data.tokenizer=hub) is read from the Hugging Face cache
    only (HubTokenizerNotCached when it is not there)."""
    parts = {
        "pipeline": PIPELINE_VERSION,
        "corpus": corpus_fingerprint or fingerprint(cfg),
        "tokenizer": tokenizer_spec(cfg, download=download),
        "vocab_size": cfg.vocab_size,
        "val_fraction": cfg.val_fraction,
        "split_seed": cfg.split_seed,
        "max_documents": cfg.max_documents,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def prepare_data(cfg: Any) -> PreparedData:
    """Prepare (or reuse from the cache) the token memmaps for ``cfg`` (a DataConfig, an
    OmegaConf node or a mapping). Raises DataError on bad input. Progress goes to stderr."""
    cfg = DataConfig.from_any(cfg).validate()
    if cfg.source == "prepared":
        return load_prepared(cfg.paths[0], vocab_size=cfg.vocab_size, tokenizer=cfg.tokenizer)
    fp = fingerprint(cfg)
    key = cache_key(cfg, fp)
    root = P.data_dir(cfg.cache_dir)
    out = root / f"{_safe(cfg.name)}-{key[:16]}"
    if (out / "meta.json").is_file():
        try:
            return load_prepared(out, vocab_size=cfg.vocab_size, tokenizer=cfg.tokenizer, key=key)
        except DataError as e:
            log(f"cached data in {out} is unusable ({e}); preparing it again")
            shutil.rmtree(out, ignore_errors=True)
    _check_writable(root)  # before minutes of tokenizing, not after
    return _build(cfg, key, fp, out)


def find_prepared(cfg: Any) -> PreparedData | None:
    """The prepared data of ``cfg`` when the cache already holds it, else None: nothing is
    downloaded, tokenized or written (a dry run's look-up)."""
    cfg = DataConfig.from_any(cfg).validate()
    if cfg.source == "prepared":
        return load_prepared(cfg.paths[0], vocab_size=cfg.vocab_size, tokenizer=cfg.tokenizer)
    try:
        key = cache_key(cfg, fingerprint(cfg), download=False)
    except HubTokenizerNotCached:
        return None
    out = P.data_dir(cfg.cache_dir) / f"{_safe(cfg.name)}-{key[:16]}"
    if not (out / "meta.json").is_file():
        return None
    try:
        return load_prepared(out, vocab_size=cfg.vocab_size, tokenizer=cfg.tokenizer, key=key)
    except DataError:
        return None


def _check_writable(root: Path) -> None:
    """DataError unless the cache root is, or can become, a folder this process writes in."""
    probe = root
    while not probe.exists():
        probe = probe.parent
    try:
        if not probe.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(probe))
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".write-probe-"):
            pass
    except OSError as e:
        raise DataError(f"data.cache_dir: cannot write the prepared data in {probe} ({e.strerror}); set "
                        "data.cache_dir (or $ISOFLOP_CACHE) to a writable folder") from None


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "data"


def load_prepared(path: str | os.PathLike, *, vocab_size: int | None = None,
                  tokenizer: str | None = None, key: str | None = None) -> PreparedData:
    """Open a prepared folder and check it: meta.json, file sizes, tokenizer hash, vocabulary.

    ``vocab_size``/``tokenizer``: what the config expects; a mismatch with meta.json is a
    DataError (a tokenizer whose vocabulary does not match the prepared data)."""
    d = Path(path).expanduser().resolve()
    meta_path = d / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"data.paths: missing data file {meta_path}")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as e:
        raise DataError(f"data.paths: {meta_path} is not valid JSON ({e})") from e
    required = ("cache_key", "tokenizer", "vocab_size", "max_token_id", "dtype", "eos_id",
                "n_train_tokens", "n_val_tokens")
    missing = [k for k in required if k not in meta]
    if missing or "kind" not in meta.get("tokenizer", {}) or "sha256" not in meta.get("tokenizer", {}):
        raise DataError(f"data.paths: {meta_path} is not a prepared-data meta.json "
                        f"(missing {', '.join(missing) or 'tokenizer.kind/sha256'})")
    if meta.get("format") != META_FORMAT:
        raise DataError(f"data.paths: {meta_path} has format {meta.get('format')!r}, expected {META_FORMAT}")
    if key is not None and meta.get("cache_key") != key:
        raise DataError(f"data: {meta_path} belongs to another cache key")
    if tokenizer is not None and meta["tokenizer"]["kind"] != tokenizer:
        raise DataError(f"data.tokenizer: {tokenizer!r} does not match the prepared data's tokenizer "
                        f"{meta['tokenizer']['kind']!r} ({meta_path})")
    if vocab_size is not None and vocab_size != meta["vocab_size"]:
        raise DataError(f"data.vocab_size: {vocab_size} does not match the prepared data's vocab_size "
                        f"{meta['vocab_size']} ({meta_path})")
    if meta["max_token_id"] >= meta["vocab_size"]:
        raise DataError(f"data.vocab_size: the prepared data holds token id {meta['max_token_id']}, "
                        f"not below its vocab_size {meta['vocab_size']} ({meta_path})")
    dtype = np.dtype(meta["dtype"])
    if dtype != token_dtype(meta["vocab_size"]):
        raise DataError(f"data.paths: {meta_path} has dtype {dtype}, expected {token_dtype(meta['vocab_size'])}")
    for split in ("train", "val"):
        f = d / f"{split}.bin"
        if not f.is_file():
            raise DataError(f"data.paths: missing data file {f}")
        want = meta[f"n_{split}_tokens"] * dtype.itemsize
        if f.stat().st_size != want:
            raise DataError(f"data.paths: {f} has {f.stat().st_size} bytes, meta.json says {want}")
    tok_path = d / "tokenizer.json"
    if not tok_path.is_file():
        raise DataError(f"data.paths: missing data file {tok_path}")
    if sha256_file(tok_path) != meta["tokenizer"]["sha256"]:
        raise DataError(f"data.tokenizer: {tok_path} is not the tokenizer the data was prepared with "
                        f"(sha256 differs from {meta_path})")
    return PreparedData(
        dir=str(d), train_path=str(d / "train.bin"), val_path=str(d / "val.bin"),
        meta_path=str(meta_path), tokenizer_path=str(tok_path), dtype=dtype.name,
        vocab_size=meta["vocab_size"], eos_id=meta["eos_id"], n_train_tokens=meta["n_train_tokens"],
        n_val_tokens=meta["n_val_tokens"], cache_key=meta["cache_key"], meta=meta)


def split_documents(n_chars: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices), each ascending. Whole documents go to validation in a seeded
    random order until they hold ``val_fraction`` of the characters; each side keeps at least one."""
    n = len(n_chars)
    if n < 2:
        raise DataError(f"data: the corpus has {n} document(s); a held-out split by document needs at "
                        "least 2 (for one text file, use data.sample_by=paragraph)")
    order = np.random.default_rng(seed).permutation(n)
    cum = np.cumsum(n_chars[order])
    k = int(np.searchsorted(cum, val_fraction * cum[-1])) + 1
    k = min(max(k, 1), n - 1)
    return np.sort(order[k:]), np.sort(order[:k])


@contextlib.contextmanager
def _progress_bars(on: bool):
    """datasets' tqdm bars (stderr) are useful on big corpora and noise on small ones."""
    import datasets

    was = datasets.is_progress_bar_enabled()
    (datasets.enable_progress_bars if on else datasets.disable_progress_bars)()
    try:
        yield
    finally:
        (datasets.enable_progress_bars if was else datasets.disable_progress_bars)()


def tokenize(ds: Any, tok: Any, eos: int, dtype: np.dtype, num_proc: int | None = None) -> Any:
    """``ds`` (a ``text`` column) as columns ``ids`` (each document's token ids followed by ``eos``,
    a list of ``dtype``: the memmap's, so the Arrow cache holds no int64 and writing the memmap
    converts nothing) and ``n_tokens``."""
    import datasets

    dtype = np.dtype(dtype)
    features = datasets.Features({"ids": datasets.List(datasets.Value(dtype.name)),
                                  "n_tokens": datasets.Value("int64")})

    def encode(batch: dict) -> dict:
        enc = tok.encode_batch(batch["text"], add_special_tokens=False)
        # numpy refuses (OverflowError) an id that the dtype cannot hold: never wrapped silently
        ids = [np.array(e.ids + [eos], dtype=dtype) for e in enc]
        return {"ids": ids, "n_tokens": [len(x) for x in ids]}

    return ds.map(encode, batched=True, batch_size=1000, num_proc=num_proc, remove_columns=["text"],
                  features=features, desc="tokenizing")


def _build(cfg: DataConfig, key: str, fp: str, out: Path) -> PreparedData:
    t0 = time.time()
    log(f"preparing {cfg.name!r} (source={cfg.source}, tokenizer={cfg.tokenizer}, "
        f"vocab_size={cfg.vocab_size}) into {out}")
    check_hub_if_uncached(cfg)  # offline: fail fast, before importing datasets
    with _progress_bars(cfg.source == "hf"):  # a download's bars; local files have the [data] lines
        ds = load_corpus(cfg)
    with _progress_bars(len(ds) >= 50_000):
        return _build_loaded(cfg, key, fp, out, ds, t0)


def _build_loaded(cfg: DataConfig, key: str, fp: str, out: Path, ds: Any, t0: float) -> PreparedData:
    if len(ds) == 0:
        raise DataError(f"data: the corpus is empty (no non-blank document; source={cfg.source}, "
                        f"paths={cfg.paths})")
    nproc = _procs(cfg, len(ds))
    lens = ds.map(lambda b: {"n": [len(t) for t in b["text"]]}, batched=True, num_proc=nproc,
                  remove_columns=["text"], desc="measuring documents")
    n_chars = np.asarray(lens["n"], dtype=np.int64)
    train_idx, val_idx = split_documents(n_chars, cfg.val_fraction, cfg.split_seed)
    log(f"loaded {len(ds):,} documents, {n_chars.sum():,} characters; holding out {len(val_idx):,} "
        f"documents ({n_chars[val_idx].sum() / n_chars.sum():.1%} of characters) for validation "
        f"[{time.time() - t0:.1f}s]")

    # tokenizer: the BPE sees the training documents only
    t1 = time.time()
    train_ds = ds.select(train_idx)
    if cfg.tokenizer == "bpe":
        log(f"training a byte-level BPE of {cfg.vocab_size} tokens on the training documents")
    if cfg.tokenizer == "hub":
        tok, eos = hub_tokenizer(cfg)
    else:
        batches = (b["text"] for b in train_ds.iter(batch_size=1000))
        tok = build_tokenizer(cfg, batches, length=len(train_ds))
        eos = eos_id(tok)
    tok_vocab = tok.get_vocab_size()
    if tok_vocab > cfg.vocab_size:
        raise DataError(f"data.vocab_size: {cfg.vocab_size} is smaller than the tokenizer's "
                        f"{tok_vocab} tokens")
    log(f"tokenizer ready: {tok_vocab:,} tokens, eos id {eos} [{time.time() - t1:.1f}s]")

    # tokenize every document, ending each with eos
    t2 = time.time()
    dtype = token_dtype(cfg.vocab_size)
    tokd = tokenize(ds, tok, eos, dtype, nproc)
    n_tokens = np.asarray(tokd["n_tokens"], dtype=np.int64)
    log(f"tokenized {n_tokens.sum():,} tokens ({n_chars.sum() / max(1, n_tokens.sum()):.2f} "
        f"characters per token) [{time.time() - t2:.1f}s]")

    # write train.bin / val.bin into a staging folder, then rename it into place
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        max_id = 0
        counts = {}
        for split, idx in (("train", train_idx), ("val", val_idx)):
            total = int(n_tokens[idx].sum())
            counts[split] = total
            arr = np.memmap(staging / f"{split}.bin", dtype=dtype, mode="w+", shape=(max(total, 1),))
            pos = 0
            for batch in tokd.select(idx).with_format("arrow").iter(batch_size=10_000):
                for chunk in batch["ids"].chunks:
                    flat = chunk.flatten().to_numpy(zero_copy_only=False)
                    if len(flat):
                        max_id = max(max_id, int(flat.max()))
                    arr[pos:pos + len(flat)] = flat
                    pos += len(flat)
            assert pos == total, (pos, total)
            arr.flush()
            del arr
            if total == 0:  # np.memmap cannot make an empty file
                (staging / f"{split}.bin").write_bytes(b"")
        if max_id >= cfg.vocab_size:
            raise DataError(f"data.vocab_size: token id {max_id} is not below vocab_size {cfg.vocab_size}")
        tok_json = tok.to_str()
        (staging / "tokenizer.json").write_text(tok_json, encoding="utf-8")
        meta = {
            "format": META_FORMAT,
            "pipeline": PIPELINE_VERSION,
            "cache_key": key,
            "name": cfg.name,
            "source": cfg.source,
            "corpus_fingerprint": fp,
            "config": asdict(cfg),
            "tokenizer": {"kind": cfg.tokenizer, "sha256": sha256_file(staging / "tokenizer.json"),
                          "vocab_size": tok_vocab, "eos": tok.id_to_token(eos),
                          **({"name": cfg.tokenizer_name, "revision": cfg.tokenizer_revision}
                             if cfg.tokenizer == "hub" else {})},
            "vocab_size": cfg.vocab_size,
            "eos_id": eos,
            "dtype": dtype.name,
            "max_token_id": max_id,
            "n_train_tokens": counts["train"],
            "n_val_tokens": counts["val"],
            "n_train_documents": int(len(train_idx)),
            "n_val_documents": int(len(val_idx)),
            "n_train_chars": int(n_chars[train_idx].sum()),
            "n_val_chars": int(n_chars[val_idx].sum()),
            "prepare_seconds": round(time.time() - t0, 2),
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=1))
        staging.chmod(0o755)
        try:
            os.replace(staging, out)
        except OSError:
            # another process (a DDP rank) finished the same key first: use its copy
            if not (out / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"prepared {counts['train']:,} train + {counts['val']:,} val tokens ({dtype.name}) in "
        f"{time.time() - t0:.1f}s -> {out}")
    return load_prepared(out, vocab_size=cfg.vocab_size, tokenizer=cfg.tokenizer, key=key)
