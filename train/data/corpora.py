"""Corpus sources: find the files, fingerprint them (cheaply, without heavy imports), and load
them as a `datasets.Dataset` with one document per row in a ``text`` column.

The fingerprint is computed before anything is loaded, so that a cache hit in ``prepare_data``
never imports `datasets` or `tokenizers` (a cached call takes milliseconds).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from . import paths as P
from .config import DataConfig
from .errors import DataError

# Shakespeare's works are cut into documents of about this many characters at blank lines, so
# that the held-out split (by document) has ~1,200 pieces to draw from instead of 42 whole
# works. A KJV document is one chapter (1,189 of them, about 3,600 characters on average).
SHAKESPEARE_DOC_CHARS = 4000
EMBEDDED_FORMAT = f"embedded-v1:kjv-chapters:shakespeare-{SHAKESPEARE_DOC_CHARS}"


def log(msg: str) -> None:
    """Data preparation's progress: `[data] ...` on stderr (train/logs.py)."""
    from train.logs import get_logger
    get_logger("data").info(msg)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _HashMemo:
    """sha256 of files, remembered by (path, size, mtime) so a large corpus is hashed once."""

    def __init__(self, memo_path: Path):
        self.path = memo_path
        try:
            self.memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            self.memo = {}
        self.dirty = False

    def sha(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        hit = self.memo.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        digest = sha256_file(path)
        self.memo[key] = [st.st_size, st.st_mtime_ns, digest]
        self.dirty = True
        return digest

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(self.memo))
            os.replace(tmp, self.path)
        except OSError:
            pass  # only a speed-up


# ----------------------------------------------------------------------------------------------
# file discovery


def expand_paths(cfg: DataConfig, suffixes: tuple[str, ...]) -> list[Path]:
    """Files named by ``data.paths``: files, folders (searched recursively for ``suffixes``) or
    glob patterns. Every entry must match at least one file."""
    out: list[Path] = []
    for raw in cfg.paths:
        p = Path(os.path.expanduser(raw))
        if any(ch in raw for ch in "*?["):
            matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(raw), recursive=True))
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise DataError(f"data.paths: the pattern {raw!r} matches no file")
            out.extend(matches)
        elif p.is_dir():
            matches = sorted(m for m in p.rglob("*") if m.is_file() and m.name.endswith(suffixes))
            if not matches:
                raise DataError(f"data.paths: the folder {raw!r} holds no {'/'.join(suffixes)} file")
            out.extend(matches)
        elif p.is_file():
            out.append(p)
        else:
            raise DataError(f"data.paths: no such file or folder: {raw!r}")
    # the same file named twice would be silently repeated data
    seen, uniq = set(), []
    for p in out:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            uniq.append(p)
    return uniq


def embedded_files() -> tuple[Path, list[Path]]:
    root = P.corpora_dir()
    kjv = root / P.KJV_DIR / "kjv.jsonl"
    shk_dir = root / P.SHAKESPEARE_DIR
    shk = sorted(shk_dir.glob("*_gut.txt")) if shk_dir.is_dir() else []
    if not kjv.is_file():
        raise DataError(f"data.source=embedded: missing data file {kjv}; {P.INSTALL_HINT}")
    if len(shk) != 42:
        raise DataError(f"data.source=embedded: expected 42 Shakespeare texts in {shk_dir}, "
                        f"found {len(shk)}; {P.INSTALL_HINT}")
    return kjv, shk


# ----------------------------------------------------------------------------------------------
# fingerprints (cheap: stdlib only)


def fingerprint(cfg: DataConfig) -> str:
    """Content fingerprint of the corpus that ``cfg`` names (sha256 hex)."""
    h = hashlib.sha256()
    if cfg.source == "embedded":
        kjv, shk = embedded_files()
        h.update(EMBEDDED_FORMAT.encode())
        for f in [kjv, *shk]:
            h.update(f"{f.name}:{sha256_file(f)}\n".encode())
    elif cfg.source in ("text", "parquet"):
        files = expand_paths(cfg, (".txt", ".text", ".md") if cfg.source == "text" else (".parquet",))
        memo = _HashMemo(P.data_dir(cfg.cache_dir) / "_file_sha256.json")
        h.update(f"{cfg.source}:{cfg.sample_by}:{cfg.text_column}\n".encode())
        for f in files:
            h.update(f"{f.name}:{memo.sha(f)}\n".encode())
        memo.save()
    elif cfg.source == "hf":
        # A hub dataset is identified by its name (and revision); its content is not known before
        # loading it. The revision joins the identity only when set: unpinned keys stay as they were.
        ident = [cfg.hf_name, cfg.hf_subset, cfg.hf_split, cfg.text_column, cfg.hf_streaming]
        if cfg.hf_revision is not None:
            if Path(cfg.hf_name).expanduser().is_dir():  # `datasets` would ignore it there
                raise DataError(f"data.hf_revision: applies to a Hub dataset, not to the local folder "
                                f"{cfg.hf_name!r}; remove it")
            ident.append({"revision": cfg.hf_revision})
        h.update(("hf:" + json.dumps(ident)).encode())
    else:
        raise DataError(f"data.source: {cfg.source!r} has no corpus fingerprint")
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# loading as a datasets.Dataset with a "text" column


def _chunk(text: str, size: int) -> list[str]:
    paras = [p for p in re.split(r"\n[ \t]*\n", text.strip()) if p.strip()]
    docs, cur, n = [], [], 0
    for p in paras:
        cur.append(p)
        n += len(p) + 2
        if n >= size:
            docs.append("\n\n".join(cur))
            cur, n = [], 0
    if cur:
        tail = "\n\n".join(cur)
        if docs and len(tail) < size // 2:
            docs[-1] = docs[-1] + "\n\n" + tail
        else:
            docs.append(tail)
    return docs


def embedded_documents() -> list[str]:
    """KJV chapters, then Shakespeare works cut at blank lines into ~4,000-character pieces."""
    kjv, shk = embedded_files()
    docs = []
    with open(kjv, encoding="utf-8") as f:
        for line in f:
            docs.append(json.loads(line)["text"])
    for path in shk:
        docs.extend(_chunk(path.read_text(encoding="utf-8", errors="replace"), SHAKESPEARE_DOC_CHARS))
    return docs


@contextlib.contextmanager
def _local_files():
    """No `datasets` progress bars while it reads local files: its "Downloading data" bar for a
    folder on disk misleads (the [data] lines say what happens)."""
    from datasets.utils import logging as ds_logging
    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()


def load_corpus(cfg: DataConfig) -> Any:
    """The corpus as a `datasets.Dataset` with a single ``text`` column, blank documents dropped."""
    import datasets

    # None: the datasets library's own cache (HF_DATASETS_CACHE / HF_HOME), so an existing Hugging
    # Face cache is reused; with data.cache_dir set, <cache_dir>/_hf
    hf_cache = P.hf_cache_dir(cfg.cache_dir)
    hf_cache = str(hf_cache) if hf_cache is not None else None
    if cfg.source == "embedded":
        ds = datasets.Dataset.from_dict({"text": embedded_documents()})
    elif cfg.source == "text":
        files = [str(f) for f in expand_paths(cfg, (".txt", ".text", ".md"))]
        with _local_files():
            ds = datasets.load_dataset("text", data_files=files, split="train", cache_dir=hf_cache,
                                       sample_by=cfg.sample_by, keep_linebreaks=True)
    elif cfg.source == "parquet":
        files = [str(f) for f in expand_paths(cfg, (".parquet",))]
        try:
            with _local_files():
                ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=hf_cache)
        except Exception as e:  # a non-parquet file, a truncated file...
            raise DataError(f"data.paths: cannot read the parquet files: {str(e).splitlines()[0]}") from e
    elif cfg.source == "hf":
        ds = _load_hf(cfg, hf_cache)
    else:
        raise DataError(f"data.source: cannot load source {cfg.source!r}")

    col = cfg.text_column if cfg.source in ("parquet", "hf") else "text"
    if col not in ds.column_names:
        raise DataError(f"data.text_column: no column {col!r} in the corpus "
                        f"(columns: {', '.join(ds.column_names)})")
    feat = ds.features[col]
    if getattr(feat, "dtype", None) not in ("string", "large_string"):
        raise DataError(f"data.text_column: column {col!r} holds {feat}, not text")
    ds = ds.select_columns([col])
    if col != "text":
        ds = ds.rename_column(col, "text")
    if cfg.max_documents is not None and len(ds) > cfg.max_documents:
        ds = ds.select(range(cfg.max_documents))
    ds = ds.filter(lambda b: [bool(t and t.strip()) for t in b["text"]], batched=True,
                   num_proc=_procs(cfg, len(ds)), desc="dropping blank documents")
    return ds


def _procs(cfg: DataConfig, n_rows: int) -> int | None:
    # worker processes only pay off on large corpora
    return cfg.num_proc if cfg.num_proc > 1 and n_rows >= 10_000 else None


def _hf_what(cfg: DataConfig) -> str:
    revision = f", revision {cfg.hf_revision!r}" if cfg.hf_revision is not None else ""
    return f"{cfg.hf_name!r} (subset {cfg.hf_subset!r}, split {cfg.hf_split!r}{revision})"


def _load_hf(cfg: DataConfig, hf_cache: str | None) -> Any:
    import datasets

    try:
        if not cfg.hf_streaming:
            return datasets.load_dataset(cfg.hf_name, cfg.hf_subset, split=cfg.hf_split,
                                         cache_dir=hf_cache, revision=cfg.hf_revision)
        # Streaming: read the first max_documents rows once and keep them as local parquet
        # shards, so that tokenizing (and any later rebuild) works offline.
        return _materialize_stream(cfg, hf_cache)
    except DataError:
        raise
    except Exception as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise DataError(f"data.hf_name: cannot load {_hf_what(cfg)}; it needs a network the first time: "
                        f"{first}") from e


HUB_CHECK_TIMEOUT_S = 3.0


def hub_unreachable() -> str | None:
    """Why the Hugging Face Hub cannot be reached (offline mode, or no connection within
    HUB_CHECK_TIMEOUT_S), or None. One quick check instead of the Hub client's retries."""
    import socket
    from urllib.parse import urlparse

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=HUB_CHECK_TIMEOUT_S).close()
    except OSError as error:
        return f"no connection to {host}:{port} ({error.__class__.__name__}: {error})"
    return None


def check_hub_if_uncached(cfg: DataConfig) -> None:
    """A streamed Hub corpus not yet in the cache needs the Hub: a one-line DataError at once when
    it cannot be reached (before `datasets` is even imported), instead of the client's retries."""
    if cfg.source == "hf" and cfg.hf_streaming:
        out = stream_dir(cfg)
        if not (out / "_complete").is_file():
            _check_hub(cfg, out)


def stream_dir(cfg: DataConfig) -> Path:
    """The folder of a streamed hf dataset's first ``max_documents`` rows (parquet shards), in the
    project's data cache; named by the dataset, its revision (when set) and the row count."""
    ident = [cfg.hf_name, cfg.hf_subset, cfg.hf_split, cfg.text_column, cfg.max_documents]
    if cfg.hf_revision is not None:
        ident.append({"revision": cfg.hf_revision})
    digest = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:16]
    return P.stream_root(cfg.cache_dir) / f"stream-{digest}"


def _check_hub(cfg: DataConfig, where: Path) -> None:
    why = hub_unreachable()
    if why:
        revision = f" at revision {cfg.hf_revision!r}" if cfg.hf_revision is not None else ""
        raise DataError(f"data.hf_name: {cfg.hf_name!r}{revision} is not in the cache ({where}) and the Hugging "
                        f"Face Hub is unreachable: {why}; it needs a network the first time")


def _materialize_stream(cfg: DataConfig, hf_cache: str | None) -> Any:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = stream_dir(cfg)
    done = out / "_complete"
    if not done.is_file():
        _check_hub(cfg, out)
        out.mkdir(parents=True, exist_ok=True)
        stream = datasets.load_dataset(cfg.hf_name, cfg.hf_subset, split=cfg.hf_split, streaming=True,
                                       revision=cfg.hf_revision)
        buf, shard, n = [], 0, 0
        for row in stream:
            if cfg.text_column not in row:
                raise DataError(f"data.text_column: no column {cfg.text_column!r} in {cfg.hf_name!r} "
                                f"(columns: {', '.join(row)})")
            buf.append(row[cfg.text_column])
            n += 1
            if len(buf) == 100_000 or n == cfg.max_documents:
                pq.write_table(pa.table({cfg.text_column: buf}), out / f"{shard:05d}.parquet")
                buf, shard = [], shard + 1
                log(f"streamed {n:,} / {cfg.max_documents:,} documents of {cfg.hf_name}")
            if n == cfg.max_documents:
                break
        if buf:
            pq.write_table(pa.table({cfg.text_column: buf}), out / f"{shard:05d}.parquet")
        done.write_text(str(n))
    files = sorted(str(p) for p in out.glob("*.parquet"))
    return datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=hf_cache)
