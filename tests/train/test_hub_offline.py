"""A Hub dataset that is not cached fails at once offline, with one line, instead of retrying."""
from __future__ import annotations

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
