import math
import random

import pytest
import torch

from train.model import Transformer
from train.plan.params import count_params
from train.plan.shapes import (CATALOG, ModelShape, ShapeError, catalog_shape, nearest_catalog_name,
                          shape_from_params, shape_from_width_depth)


def built_count(shape: ModelShape) -> int:
    with torch.device("meta"):  # no memory: count the real modules' parameters
        model = Transformer(shape, attention="sdpa")
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(CATALOG))
def test_catalog_count_equals_built_model(name):
    shape = CATALOG[name]
    assert count_params(shape).total == built_count(shape)


@pytest.mark.parametrize("name", list(CATALOG))
def test_catalog_name_states_its_size(name):
    label = name.split("-")[1]
    stated = float(label[:-1]) * (1e9 if label.endswith("b") else 1e6)
    assert abs(count_params(CATALOG[name]).total / stated - 1) < 0.05


def test_catalog_follows_chinchilla_table_a9_spirit():
    shapes = sorted(CATALOG.values(), key=lambda s: count_params(s).total)
    assert count_params(shapes[0]).total < 80e6 and count_params(shapes[-1]).total > 0.95e9
    widths = [s.d_model for s in shapes]
    assert widths == sorted(widths)
    for shape in shapes:
        millions = count_params(shape).total / 1e6
        assert shape.head_dim == (64 if millions < 400 else 128)


def test_random_shapes_count_equals_built_model():
    rng = random.Random(0)
    for _ in range(25):
        head_dim = rng.choice([8, 16, 32, 64])
        n_head = rng.randint(1, 6)
        shape = ModelShape(n_layer=rng.randint(1, 5), d_model=head_dim * n_head, n_head=n_head,
                           head_dim=head_dim, d_ff=rng.randint(8, 300), vocab_size=rng.randint(50, 3000),
                           seq_len=rng.choice([16, 64]), tie_embeddings=rng.random() < 0.5)
        counts = count_params(shape)
        assert counts.total == built_count(shape)
        assert counts.total == counts.non_embedding + counts.embedding


def test_tied_embeddings_drop_the_head():
    untied = shape_from_width_depth(128, 2, 1000, 64, tie_embeddings=False)
    tied = shape_from_width_depth(128, 2, 1000, 64, tie_embeddings=True)
    assert count_params(untied).total - count_params(tied).total == 1000 * 128
    assert count_params(untied).non_embedding == count_params(tied).non_embedding


@pytest.mark.parametrize("target", [1e5, 3e5, 1e6, 3e6, 1e7, 1e8, 1e9])
def test_shape_rule_lands_near_target(target):
    vocab = 2048 if target < 1e8 else 50304
    shape = shape_from_params(target, vocab, 256)
    assert abs(count_params(shape).total / target - 1) <= 0.10
    assert shape.n_head * shape.head_dim == shape.d_model


def test_shape_rule_is_monotone_and_prefers_aspect_ratio():
    previous = 0
    for target in [2e5 * 1.3 ** k for k in range(20)]:
        total = count_params(shape_from_params(target, 2048, 128)).total
        assert total > previous
        previous = total
    big = shape_from_params(3e8, 50304, 1024)
    assert 32 <= big.d_model / big.n_layer <= 128


def test_shape_rule_refuses_unreachable_targets():
    with pytest.raises(ShapeError, match="model.params"):
        shape_from_params(1e4, 2048, 128)
    with pytest.raises(ShapeError, match="model.params"):
        shape_from_params(-5, 2048, 128)
    with pytest.raises(ShapeError, match="model.params"):
        shape_from_params(math.nan, 2048, 128)


def test_bad_shapes_name_the_field():
    with pytest.raises(ShapeError, match="head_dim"):
        ModelShape(n_layer=2, d_model=100, n_head=2, head_dim=64, d_ff=256, vocab_size=100, seq_len=16)
    with pytest.raises(ShapeError, match="model.n_layer"):
        ModelShape(n_layer=0, d_model=64, n_head=1, head_dim=64, d_ff=256, vocab_size=100, seq_len=16)
    with pytest.raises(ShapeError, match="unknown catalog name"):
        catalog_shape("llama-3b")


def test_nearest_catalog_name():
    assert nearest_catalog_name(count_params(CATALOG["llama-160m"]).total * 1.05) == "llama-160m"
    assert nearest_catalog_name(5e6) is None
