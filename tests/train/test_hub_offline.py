"""The Hugging Face Hub, offline: a Hub dataset that is not cached fails at once, with one line,
instead of retrying; a dataset revision is part of the corpus's identity; a Hub tokenizer by name
is read from a real Hugging Face cache layout (or a local folder) without a network."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import REPO
from train.data import DataConfig, DataError
from train.data.corpora import hub_unreachable, load_corpus


def test_offline_mode_is_unreachable(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_unreachable() == "HF_HUB_OFFLINE is set"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    assert hub_unreachable().startswith("no connection to 127.0.0.1:9")


def test_uncached_fineweb_fails_fast_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = DataConfig.from_any(OmegaConf.load(REPO / "configs" / "data" / "fineweb_edu.yaml"))
    cfg.cache_dir = str(tmp_path)
    with pytest.raises(DataError, match=r"data.hf_name: 'HuggingFaceFW/fineweb-edu' is not in the cache .* "
                                        r"unreachable: HF_HUB_OFFLINE is set; it needs a network the first time"):
        load_corpus(cfg)


def test_preparing_an_uncached_hub_corpus_offline_is_one_data_error(monkeypatch, tmp_path):
    from train.data import prepare_data
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = DataConfig.from_any(OmegaConf.load(REPO / "configs" / "data" / "fineweb_edu.yaml"))
    cfg.cache_dir = str(tmp_path)
    with pytest.raises(DataError, match="the Hugging Face Hub is unreachable: HF_HUB_OFFLINE is set"):
        prepare_data(cfg)


# ---------------------------------------------------------------------------------------------
# data.hf_revision: part of the corpus's identity when set, and the identity unchanged when not


def _hf_cfg(**kw) -> DataConfig:
    return DataConfig(source="hf", hf_name="org/corpus", hf_subset="sub", hf_streaming=True,
                      max_documents=100, tokenizer="gpt2", vocab_size=50257, **kw)


def test_revision_is_another_corpus_and_another_stream_folder(tmp_path):
    import hashlib
    import json

    from train.data.corpora import fingerprint, stream_dir
    from train.data.prepare import cache_key

    base, v1, v2 = _hf_cfg(cache_dir=str(tmp_path)), _hf_cfg(hf_revision="v1", cache_dir=str(tmp_path)), \
        _hf_cfg(hf_revision="v2", cache_dir=str(tmp_path))
    assert len({fingerprint(c) for c in (base, v1, v2)}) == 3
    assert len({cache_key(c) for c in (base, v1, v2)}) == 3
    assert len({stream_dir(c) for c in (base, v1, v2)}) == 3
    # unpinned, the identities are the ones recorded before the revision existed (cache entries kept)
    old = ["org/corpus", "sub", "train", "text", True]
    assert fingerprint(base) == hashlib.sha256(("hf:" + json.dumps(old)).encode()).hexdigest()
    old_stream = json.dumps(["org/corpus", "sub", "train", "text", 100])
    assert stream_dir(base) == tmp_path / "_hf" / f"stream-{hashlib.sha256(old_stream.encode()).hexdigest()[:16]}"


def test_uncached_revision_fails_fast_offline_naming_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match=r"^data\.hf_name: 'org/corpus' at revision 'v1' is not in the cache "):
        load_corpus(_hf_cfg(hf_revision="v1", cache_dir=str(tmp_path)))
    # a local folder as hf_name has no revisions (`datasets` would ignore one): refused, not ignored
    from train.data import prepare_data
    with pytest.raises(DataError, match=r"^data\.hf_revision: applies to a Hub dataset, not to the local folder"):
        prepare_data(DataConfig(source="hf", hf_name=str(tmp_path), hf_revision="v1", cache_dir=str(tmp_path)))


@pytest.mark.parametrize("kw,match", [
    (dict(source="text", paths=["/x.txt"], hf_revision="main"), r"data\.hf_revision: applies to data\.source=hf only, not 'text'"),
    (dict(hf_revision=""), r"data\.hf_revision: is an empty string"),
    (dict(tokenizer_name="gpt2"), r"data\.tokenizer_name: applies to data\.tokenizer=hub only, not 'bpe'"),
    (dict(tokenizer_revision="main"), r"data\.tokenizer_revision: applies to data\.tokenizer=hub only"),
    (dict(tokenizer="hub"), r"data\.tokenizer_name: is empty; data\.tokenizer=hub needs a Hub model id"),
])
def test_revision_and_hub_fields_are_checked(kw, match):
    with pytest.raises(DataError, match=match):
        DataConfig(**kw).validate()


# ---------------------------------------------------------------------------------------------
# data.tokenizer=hub: a real tokenizer in a real Hugging Face cache layout, read offline

TEXTS = [f"Document {i}: the lord of the isles said {i * 7} words, café and naïve. " * 3 for i in range(40)]


def _save_tokenizer(folder: Path, vocab: int, eos: str = "</s>") -> Path:
    """A real byte-level BPE saved as a transformers tokenizer, with end-of-text `eos` (not the
    first of EOS_CANDIDATES: the data must take the tokenizer's own)."""
    from transformers import PreTrainedTokenizerFast

    from train.data.tokenizer import train_bpe
    tok = train_bpe([TEXTS], vocab)
    tok.add_special_tokens([eos])
    tok.enable_truncation(16)  # as some Hub tokenizer.json files have: the pipeline must keep documents whole
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos).save_pretrained(str(folder))
    return folder


def _place_in_hub_cache(hub: Path, repo_id: str, folder: Path, commit: str, ref: str | None = "main",
                        model_config: bool = True) -> None:
    """huggingface_hub's cache layout: models--org--name/snapshots/<commit>/<files>, refs/<ref>.
    A model repository has a config.json (transformers reads it to pick the tokenizer class); for
    a tokenizer-only repository the Hub client records the missing file under .no_exist/."""
    import json
    import shutil

    repo = hub / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    if model_config:
        (repo / "snapshots" / commit / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    else:
        (repo / ".no_exist" / commit).mkdir(parents=True)
        (repo / ".no_exist" / commit / "config.json").write_text("")
    if ref is not None:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)


def _corpus(tmp_path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "pq").mkdir()
    pq.write_table(pa.table({"text": TEXTS}), tmp_path / "pq" / "part0.parquet")
    return tmp_path / "pq"


def _documents(d) -> list[str]:
    import numpy as np

    from train.data import load_tokenizer
    tok = load_tokenizer(d.tokenizer_path)
    whole = np.concatenate([np.memmap(d.train_path, dtype=d.dtype, mode="r"),
                            np.memmap(d.val_path, dtype=d.dtype, mode="r")])
    ends = np.flatnonzero(whole == d.eos_id)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tok.decode(whole[s:e].tolist()) for s, e in zip(starts, ends)]


PREPARE = """
import json, sys
from train.data import DataConfig, prepare_data
out = []
for revision in (None, sys.argv[3]):
    d = prepare_data(DataConfig(source="parquet", paths=[sys.argv[1]], tokenizer="hub", tokenizer_name="org/tiny-bpe",
                                tokenizer_revision=revision, vocab_size=512, cache_dir=sys.argv[2]))
    out.append({"dir": d.dir, "key": d.cache_key, "eos_id": d.eos_id, "tokenizer": d.meta["tokenizer"]})
print(json.dumps(out))
"""


def test_hub_tokenizer_by_name_from_the_cache_offline(tmp_path):
    import json

    from tests.conftest import run_cli
    from train.data import load_prepared, load_tokenizer
    corpus = _corpus(tmp_path)
    hub = tmp_path / "hf" / "hub"
    main, other = "1" * 40, "2" * 40
    _place_in_hub_cache(hub, "org/tiny-bpe", _save_tokenizer(tmp_path / "t300", 300), main)
    _place_in_hub_cache(hub, "org/tiny-bpe", _save_tokenizer(tmp_path / "t400", 400), other, ref=None,
                        model_config=False)
    proc = run_cli("-c", PREPARE, str(corpus), str(tmp_path / "cache"), other,
                   env={"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    by_main, by_commit = json.loads(proc.stdout)
    for got, folder in ((by_main, tmp_path / "t300"), (by_commit, tmp_path / "t400")):
        d = load_prepared(got["dir"], tokenizer="hub", vocab_size=512)
        tok = load_tokenizer(d.tokenizer_path)
        assert d.eos_id == tok.token_to_id("</s>") != tok.token_to_id("<|endoftext|>")
        assert got["tokenizer"]["name"] == "org/tiny-bpe" and got["tokenizer"]["eos"] == "</s>"
        assert tok.get_vocab() == load_tokenizer(folder / "tokenizer.json").get_vocab()  # that revision's
        assert sorted(_documents(d)) == sorted(TEXTS)  # every document decodes back to its text
    assert by_commit["tokenizer"]["revision"] == other and by_main["tokenizer"]["revision"] is None
    assert by_main["key"] != by_commit["key"]  # another revision's content: another cache entry


def test_hub_tokenizer_from_a_local_folder(tmp_path):
    from train.data import load_tokenizer, prepare_data
    folder = _save_tokenizer(tmp_path / "tok", 300)
    cfg = DataConfig(source="parquet", paths=[str(_corpus(tmp_path))], tokenizer="hub", tokenizer_name=str(folder),
                     vocab_size=512, cache_dir=str(tmp_path / "cache"))
    d = prepare_data(cfg)
    assert d.eos_id == load_tokenizer(d.tokenizer_path).token_to_id("</s>")
    assert sorted(_documents(d)) == sorted(TEXTS)
    assert prepare_data(cfg).cache_key == d.cache_key  # a cache hit
    # the export's tokenizer ends text with the data's end-of-text token, not the first candidate
    import dataclasses

    import yaml

    from train.export import run_tokenizer
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({"data": dataclasses.asdict(cfg), "model": {"seq_len": 64}}))
    exported, eos = run_tokenizer(tmp_path / "run")
    assert exported.eos_token == "</s>" and exported.eos_token_id == eos == d.eos_id
    # the folder's content is the key: another tokenizer there is another cache entry
    _save_tokenizer(folder, 280)
    assert prepare_data(cfg).cache_key != d.cache_key
    with pytest.raises(DataError, match=r"data\.vocab_size: 256 is smaller than the tokenizer's \d+ tokens"):
        prepare_data(DataConfig(**{**cfg.__dict__, "vocab_size": 256}))
    with pytest.raises(DataError, match=r"data\.tokenizer_revision: applies to a Hub model id, not to the local folder"):
        prepare_data(DataConfig(**{**cfg.__dict__, "tokenizer_revision": "main"}))


def test_hub_tokenizer_not_in_the_cache_offline(tmp_path):
    """(The CLI's one-line form of this error: tests/reliability/test_bad_input.py.)"""
    from train.data import prepare_data
    from train.data.tokenizer import hub_cache_dir
    cfg = DataConfig(tokenizer="hub", tokenizer_name="org/not-cached", vocab_size=512, cache_dir=str(tmp_path))
    with pytest.raises(DataError) as caught:
        prepare_data(cfg)
    assert str(caught.value) == (f"data.tokenizer_name: 'org/not-cached' is not in the Hugging Face cache ({hub_cache_dir()}) "
                                 "and the Hugging Face Hub is unreachable: HF_HUB_OFFLINE is set; it needs a network the "
                                 "first time")
    assert not any(tmp_path.iterdir())  # failed before any corpus work
    from train.data import find_prepared
    assert find_prepared(cfg) is None  # a dry run's look-up: not prepared, and no error
    with pytest.raises(DataError, match=r"data\.tokenizer_name: no such folder: '/no/such/tokenizer'"):
        prepare_data(DataConfig(**{**cfg.__dict__, "tokenizer_name": "/no/such/tokenizer"}))


def test_a_slow_only_tokenizer_is_refused(tmp_path):
    from transformers import ByT5Tokenizer  # a Python tokenizer with no tokenizer.json

    from train.data import prepare_data
    ByT5Tokenizer().save_pretrained(str(tmp_path / "byt5"))
    cfg = DataConfig(tokenizer="hub", tokenizer_name=str(tmp_path / "byt5"), vocab_size=512, cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match=r"^data\.tokenizer_name: the folder '.*byt5' has only a slow \(Python\) "
                                        r"tokenizer \(ByT5Tokenizer\); the pipeline needs a fast one"):
        prepare_data(cfg)
