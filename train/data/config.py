"""The data config: one flat dataclass, used by Hydra as the structured schema of the ``data`` group.

Only plain typed fields (str/int/float/bool/Optional/list[str]) so that OmegaConf can type-check
overrides such as ``data.vocab_size=4096`` and reject unknown keys. ``validate()`` checks the
values; ``prepare_data`` calls it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, List, Optional

from .errors import DataError

SOURCES = ("embedded", "text", "parquet", "hf", "prepared")
TOKENIZERS = ("bpe", "gpt2", "file", "hub")
SAMPLE_BY = ("document", "paragraph", "line")
REPEAT_POLICIES = ("warn", "refuse")
GPT2_VOCAB = 50257  # 50,000 merges + 256 byte tokens + <|endoftext|>
# Fields added after run ids and sweep identities were first recorded: while unset (None) they are
# left out of both, so that runs and sweeps recorded before them keep their ids.
UNSET_NOT_IN_IDENTITY = ("hf_revision", "tokenizer_name", "tokenizer_revision")


def identity_items(data: dict) -> dict:
    """``data`` (a data config as a dict) without the UNSET_NOT_IN_IDENTITY fields left unset."""
    return {k: v for k, v in data.items() if not (k in UNSET_NOT_IN_IDENTITY and v is None)}


@dataclass
class DataConfig:
    # Preset name; names the cache folder and the wandb config, not part of the cache key.
    name: str = "embedded"
    # embedded: KJV + Shakespeare from the cache (scripts/install_corpora.py)
    # text: plain-text files in `paths`; parquet: parquet files in `paths` (column `text_column`)
    # hf: a Hugging Face dataset by name (needs a network the first time)
    # prepared: `paths[0]` is a folder that already holds train.bin/val.bin/meta.json
    source: str = "embedded"
    # files, folders or glob patterns (text, parquet); the prepared folder (prepared)
    paths: List[str] = field(default_factory=list)
    # text source: what one document is: a whole file, a blank-line paragraph, or a line
    sample_by: str = "document"
    # parquet and hf sources: the column that holds the text
    text_column: str = "text"
    hf_name: Optional[str] = None
    hf_subset: Optional[str] = None
    hf_split: str = "train"
    # hf source: the dataset's revision on the Hub (a branch, tag or commit; None: the default
    # branch). Part of the cache key: another revision is another cache entry.
    hf_revision: Optional[str] = None
    # stream the hf dataset and keep the first `max_documents` (needs max_documents)
    hf_streaming: bool = False
    # keep only the first N documents of the source (None: all)
    max_documents: Optional[int] = None
    # bpe: byte-level BPE trained here on the training split; gpt2: the GPT-2 BPE files;
    # file: a tokenizer.json of your own (`tokenizer_file`); hub: a (fast) tokenizer of the
    # Hugging Face Hub by model id, or a local folder of tokenizer files (`tokenizer_name`)
    tokenizer: str = "bpe"
    tokenizer_file: Optional[str] = None
    # hub: a model id (gpt2, meta-llama/Llama-3.2-1B) or a folder; read from the Hugging Face
    # cache first, from the Hub only when it is not there
    tokenizer_name: Optional[str] = None
    # hub: the model repository's revision (a branch, tag or commit; None: the default branch)
    tokenizer_revision: Optional[str] = None
    # bpe: the size to train (2048 keeps tiny CPU models from being mostly embedding);
    # gpt2/file/hub: the model's vocabulary, at least the tokenizer's (50257 for gpt2; padding
    # such as 50304 is allowed and changes nothing in the data)
    vocab_size: int = 2048
    # share of the corpus (in characters) held out for validation, by whole documents
    val_fraction: float = 0.02
    # seed of the document split (not of the batch order: that is the run's seed)
    split_seed: int = 0
    # prepared-data cache root (None: $ISOFLOP_CACHE/data or <repo>/.cache/data)
    cache_dir: Optional[str] = None
    # processes for datasets.map (the Rust tokenizer also threads within each process)
    num_proc: int = 1
    # when a run needs more tokens than the training split holds: warn, or refuse to start
    repeat_policy: str = "warn"
    # the training-split tokens this config provides, declared (a lower bound: the known size of
    # the sample), so that a dry run compares every run's tokens with it without preparing the
    # data; None: unknown until prepared. A real run or sweep checks the prepared count.
    unique_tokens: Optional[int] = None

    def validate(self) -> "DataConfig":
        """Raise DataError naming the first bad field; return self."""
        def bad(name: str, msg: str) -> DataError:
            return DataError(f"data.{name}: {msg}")

        if self.source not in SOURCES:
            raise bad("source", f"unknown source {self.source!r} (choose one of {', '.join(SOURCES)})")
        if self.tokenizer not in TOKENIZERS:
            raise bad("tokenizer", f"unknown tokenizer {self.tokenizer!r} "
                                   f"(choose one of {', '.join(TOKENIZERS)})")
        if self.repeat_policy not in REPEAT_POLICIES:
            raise bad("repeat_policy", f"unknown policy {self.repeat_policy!r} "
                                       f"(choose one of {', '.join(REPEAT_POLICIES)})")
        if self.sample_by not in SAMPLE_BY:
            raise bad("sample_by", f"unknown value {self.sample_by!r} (choose one of {', '.join(SAMPLE_BY)})")
        if self.source in ("text", "parquet", "prepared") and not self.paths:
            raise bad("paths", f"is empty; source {self.source!r} needs at least one path")
        if self.source == "prepared" and len(self.paths) != 1:
            raise bad("paths", "source 'prepared' takes exactly one folder")
        if self.source == "hf" and not self.hf_name:
            raise bad("hf_name", "is empty; source 'hf' needs a dataset name")
        if self.hf_streaming and self.max_documents is None:
            raise bad("max_documents", "must be set when data.hf_streaming=true (a stream has no end)")
        if self.max_documents is not None and self.max_documents < 2:
            raise bad("max_documents", f"must be at least 2 (train and val), got {self.max_documents}")
        if self.tokenizer == "file" and not self.tokenizer_file:
            raise bad("tokenizer_file", "is empty; data.tokenizer=file needs a tokenizer.json path")
        for name in ("hf_revision", "tokenizer_name", "tokenizer_revision"):
            if getattr(self, name) is not None and not str(getattr(self, name)).strip():
                raise bad(name, "is an empty string; give a value, or null to leave it unset")
        if self.hf_revision is not None and self.source != "hf":
            raise bad("hf_revision", f"applies to data.source=hf only, not {self.source!r}; remove it "
                                     "(or set it to null)")
        for name in ("tokenizer_name", "tokenizer_revision"):
            if getattr(self, name) is not None and self.tokenizer != "hub":
                raise bad(name, f"applies to data.tokenizer=hub only, not {self.tokenizer!r}; remove it "
                                "(or set data.tokenizer=hub)")
        if self.tokenizer == "hub" and self.source != "prepared" and not self.tokenizer_name:
            raise bad("tokenizer_name", "is empty; data.tokenizer=hub needs a Hub model id (e.g. gpt2) "
                                        "or a local folder of tokenizer files")
        if self.tokenizer == "bpe" and not 257 <= self.vocab_size <= 65535 + 1:
            raise bad("vocab_size", f"{self.vocab_size} is outside [257, 65536] for a byte-level BPE "
                                    "(256 byte tokens + <|endoftext|> at least)")
        if self.tokenizer == "gpt2" and self.vocab_size < GPT2_VOCAB:
            raise bad("vocab_size", f"{self.vocab_size} is smaller than the gpt2 tokenizer's "
                                    f"{GPT2_VOCAB} tokens")
        if self.vocab_size <= 0:
            raise bad("vocab_size", f"must be positive, got {self.vocab_size}")
        if not 0.0 < self.val_fraction < 0.5:
            raise bad("val_fraction", f"must be in (0, 0.5), got {self.val_fraction}")
        if self.num_proc < 1:
            raise bad("num_proc", f"must be at least 1, got {self.num_proc}")
        if self.unique_tokens is not None and self.unique_tokens < 1:
            raise bad("unique_tokens", f"must be a positive number of tokens (or null: unknown), "
                                       f"got {self.unique_tokens}")
        return self

    @classmethod
    def from_any(cls, cfg: Any) -> "DataConfig":
        """Accept a DataConfig, an OmegaConf node (as Hydra passes it) or a plain mapping."""
        if isinstance(cfg, cls):
            return cfg
        if type(cfg).__name__ == "DictConfig":
            from omegaconf import OmegaConf

            obj = OmegaConf.to_object(cfg)
            if isinstance(obj, cls):
                return obj
            cfg = obj
        if not isinstance(cfg, dict):
            raise DataError(f"data: expected a DataConfig or a mapping, got {type(cfg).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise DataError(f"data.{unknown[0]}: unknown key (known keys: {', '.join(sorted(known))})")
        return cls(**{k: (list(v) if k == "paths" else v) for k, v in cfg.items()})
