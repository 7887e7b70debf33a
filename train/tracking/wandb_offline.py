"""Read an offline wandb run (`run-*.wandb`) back without a server.

The `.wandb` file is wandb's transaction log. In wandb 0.31 it is written by the Go service
(wandb-core: core/internal/transactionlog + core/pkg/leveldb, a fork of golang/leveldb's
record package); the Python reader that older SDKs had (wandb/sdk/internal/datastore.py) is gone
from the installed package, so this module implements the format itself:

    file   := header block0 block1 ...
    header := ":W&B" (4 bytes) | magic 0xBEE1 (uint16 little-endian) | version (uint8)
              (0 as written by wandb 0.31.0; 1 in later wandb-core builds)
    block  := 32 KiB, counted from the start of the file (the header is part of block 0),
              packed with chunks; a chunk never crosses a block boundary, and a tail of fewer
              than 7 bytes is zero padding
    chunk  := crc32 (uint32 LE, zlib/IEEE CRC-32 of the type byte + payload)
              | length (uint16 LE) | type (uint8: 1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST) | payload
    record := one FULL chunk, or FIRST MIDDLE* LAST; its bytes are one serialized
              wandb.proto.wandb_internal_pb2.Record

History rows are Record.history: items of {key (or nested_key), value_json}.

wandb-core flushes the file after `run.finish()` has returned (a fraction of a second later in
practice); `is_complete()` tells whether the final `exit` record is there, and
train.tracking.wandb_log.WandbLogger.finish() waits for it.

Corruption is handled like the Go reader: a bad chunk (checksum or length) skips to the next
block; a truncated tail (a run still writing, or killed) ends the read.
"""

from __future__ import annotations

import json
import struct
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

MAGIC = b":W&B"
HEADER = struct.Struct("<4sHB")  # ident, magic, version: 7 bytes
MAGIC_NUMBER = 0xBEE1
KNOWN_VERSIONS = (0, 1)
BLOCK = 32 * 1024
CHUNK_HEADER = struct.Struct("<IHB")  # crc32, length, type: 7 bytes
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def find_wandb_file(path: str | Path) -> Path:
    """A `.wandb` file, or the newest `run-*.wandb` under a run dir / wandb dir."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise FileNotFoundError(p)
    found = sorted(p.rglob("run-*.wandb"), key=lambda f: f.stat().st_mtime)
    if not found:
        raise FileNotFoundError(f"no run-*.wandb under {p}")
    if len(found) > 1:
        warnings.warn(f"{len(found)} .wandb files under {p}; reading the newest: {found[-1]}")
    return found[-1]


def iter_record_bytes(data: bytes) -> Iterator[bytes]:
    """Yield the payload of every complete record in a .wandb file's bytes."""
    if len(data) < HEADER.size:
        raise ValueError("not a .wandb file: shorter than its 7-byte header")
    ident, magic, version = HEADER.unpack_from(data, 0)
    if ident != MAGIC or magic != MAGIC_NUMBER:
        raise ValueError(f"not a .wandb file: header {data[:7]!r}")
    if version not in KNOWN_VERSIONS:
        warnings.warn(f".wandb format version {version} is newer than this reader knows")

    yield from _iter_chunks(data, HEADER.size)


def _iter_chunks(data: bytes, pos: int) -> Iterator[bytes]:
    """Records in data[pos:], where data[0] sits at a block boundary of the file."""
    n = len(data)
    pending: bytearray | None = None  # a record being assembled from FIRST/MIDDLE chunks
    while pos < n:
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER.size:  # zero padding at a block's end
            pos += left_in_block
            continue
        if pos + CHUNK_HEADER.size > n:
            break  # truncated tail
        crc, length, kind = CHUNK_HEADER.unpack_from(data, pos)
        if crc == 0 and length == 0 and kind == 0:  # zeroed rest of block
            pos += left_in_block
            pending = None
            continue
        start, end = pos + CHUNK_HEADER.size, pos + CHUNK_HEADER.size + length
        if end > n:
            break  # truncated tail: the writer had not flushed this chunk yet
        bad = end > pos + left_in_block or kind not in (FULL, FIRST, MIDDLE, LAST)
        if not bad and zlib.crc32(data[start - 1 : end]) != crc:  # type byte + payload
            bad = True
        if bad:  # corrupt: resynchronise at the next block, as the Go reader does
            warnings.warn(f"corrupt chunk at offset {pos}; skipping to the next block")
            pos += left_in_block
            pending = None
            continue
        payload = data[start:end]
        pos = end
        if kind == FULL:
            pending = None
            yield bytes(payload)
        elif kind == FIRST:
            pending = bytearray(payload)
        elif pending is not None:  # MIDDLE or LAST continuing a record
            pending += payload
            if kind == LAST:
                yield bytes(pending)
                pending = None
        # a MIDDLE/LAST without its FIRST (after corruption) is dropped


def is_complete(path: str | Path) -> bool:
    """Whether the run's final `exit` record has reached the file.

    wandb-core writes the file asynchronously: `run.finish()` returns before the last records
    are flushed, so a reader right after finish may see a partial (even header-only) file.
    Only the last one or two 32 KiB blocks are read, so this is cheap to poll.
    """
    from wandb.proto import wandb_internal_pb2

    f = find_wandb_file(path)
    size = f.stat().st_size
    start = max(0, (size - 1) // BLOCK - 1) * BLOCK  # a block boundary before the last record
    with open(f, "rb") as fh:
        fh.seek(start)
        tail = fh.read()
    chunks = iter_record_bytes(tail) if start == 0 else _iter_chunks(tail, 0)
    for raw in chunks:
        rec = wandb_internal_pb2.Record()
        try:
            rec.ParseFromString(raw)
        except Exception:  # noqa: BLE001 - a partial or foreign record: keep looking
            continue
        if rec.WhichOneof("record_type") == "exit":
            return True
    return False


def iter_records(path: str | Path) -> Iterator[Any]:
    """Yield `wandb_internal_pb2.Record` messages from a .wandb file or run dir."""
    from wandb.proto import wandb_internal_pb2  # protobuf schema only; no server, no run

    data = find_wandb_file(path).read_bytes()
    for raw in iter_record_bytes(data):
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(raw)
        yield rec


def _items(items) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for it in items:
        key = it.key or "/".join(it.nested_key)
        out[key] = json.loads(it.value_json) if it.value_json else None
    return out


def read_offline_history(run_dir_or_wandb_file: str | Path) -> list[dict[str, Any]]:
    """Every logged history row, in order, as {key: value} (values decoded from JSON).

    Includes wandb's own keys such as `_step`, `_runtime` and `_timestamp`.
    """
    rows = []
    for rec in iter_records(run_dir_or_wandb_file):
        if rec.WhichOneof("record_type") == "history":
            rows.append(_items(rec.history.item))
    return rows


def read_offline_metric_definitions(run_dir_or_wandb_file: str | Path) -> dict[str, dict]:
    """`define_metric` calls recorded in the run: {name or glob: {"step_metric": ..., ...}}."""
    out: dict[str, dict] = {}
    for rec in iter_records(run_dir_or_wandb_file):
        if rec.WhichOneof("record_type") != "metric":
            continue
        m = rec.metric
        name = m.name or m.glob_name
        d = out.setdefault(name, {})
        d["glob"] = bool(m.glob_name)
        if m.step_metric:
            d["step_metric"] = m.step_metric
        if m.HasField("options") and m.options.step_sync:
            d["step_sync"] = True
    return out


def read_offline_config(run_dir_or_wandb_file: str | Path) -> dict[str, Any]:
    """The run config (from the run record and later config updates)."""
    cfg: dict[str, Any] = {}
    for rec in iter_records(run_dir_or_wandb_file):
        kind = rec.WhichOneof("record_type")
        upd = rec.run.config.update if kind == "run" else rec.config.update if kind == "config" else []
        for it in upd:
            key = it.key or "/".join(it.nested_key)
            cfg[key] = json.loads(it.value_json) if it.value_json else None
    cfg.pop("_wandb", None)
    return {k: (v["value"] if isinstance(v, dict) and set(v) == {"value"} else v) for k, v in cfg.items()}


def read_offline_summary(run_dir_or_wandb_file: str | Path) -> dict[str, Any]:
    """The run summary (the runs table's columns): the last value set for each key."""
    out: dict[str, Any] = {}
    for rec in iter_records(run_dir_or_wandb_file):
        if rec.WhichOneof("record_type") == "summary":
            out.update(_items(rec.summary.update))
    return out
