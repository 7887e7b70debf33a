import pytest
import torch

from train.export import export_model, to_hf
from train.model import Transformer
from train.plan.shapes import ModelShape

SHAPES = [
    ModelShape(n_layer=2, d_model=64, n_head=2, head_dim=32, d_ff=176, vocab_size=256, seq_len=32),
    ModelShape(n_layer=3, d_model=96, n_head=6, head_dim=16, d_ff=256, vocab_size=500, seq_len=48,
               tie_embeddings=True),
]


def make_model(shape, seed=0):
    torch.manual_seed(seed)
    model = Transformer(shape, attention="sdpa").eval()
    # Perturb the norm weights so the comparison also checks that they are carried over.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def test_forward_shape_and_causality():
    shape = SHAPES[0]
    model = make_model(shape)
    idx = torch.randint(0, shape.vocab_size, (2, shape.seq_len))
    logits = model(idx)
    assert logits.shape == (2, shape.seq_len, shape.vocab_size)
    changed = idx.clone()
    changed[:, -1] = (changed[:, -1] + 1) % shape.vocab_size
    # Changing the last token must not change any earlier position's logits.
    assert torch.equal(model(changed)[:, :-1], logits[:, :-1])
    assert not torch.equal(model(changed)[:, -1], logits[:, -1])


def test_loss_starts_near_uniform():
    shape = SHAPES[0]
    model = make_model(shape)
    idx = torch.randint(0, shape.vocab_size, (4, shape.seq_len))
    loss = model.loss(idx[:, :-1], idx[:, 1:]).item()
    assert abs(loss - torch.log(torch.tensor(float(shape.vocab_size))).item()) < 0.3


@pytest.mark.parametrize("shape", SHAPES)
def test_logits_match_transformers_llama(shape):
    model = make_model(shape)
    hf = to_hf(model)
    idx = torch.randint(0, shape.vocab_size, (2, shape.seq_len))
    with torch.no_grad():
        ours = model(idx)
        theirs = hf(input_ids=idx).logits
    assert torch.allclose(ours, theirs, atol=1e-5, rtol=0)


def test_exported_directory_loads_with_from_pretrained(tmp_path):
    from transformers import AutoModelForCausalLM

    shape = SHAPES[1]
    model = make_model(shape)
    export_model(model, tmp_path / "hf")
    assert (tmp_path / "hf" / "config.json").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert type(loaded).__name__ == "LlamaForCausalLM"
    idx = torch.randint(0, shape.vocab_size, (1, shape.seq_len))
    with torch.no_grad():
        assert torch.allclose(model(idx), loaded(input_ids=idx).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_gradients_match_transformers_llama(shape):
    """The hand-written backward passes (CPU, fp32) give transformers' gradients, the fused
    projections' split back into q/k/v and gate/up as export does."""
    from train.export import split_fused

    model = make_model(shape).train()
    hf = to_hf(model).train()
    idx = torch.randint(0, shape.vocab_size, (2, shape.seq_len))
    targets = torch.randint(0, shape.vocab_size, (2, shape.seq_len))
    loss = model(idx, targets)
    hf_loss = torch.nn.functional.cross_entropy(hf(input_ids=idx).logits.flatten(0, 1), targets.flatten())
    assert torch.allclose(loss, hf_loss, atol=1e-5, rtol=0)
    (2.5 * loss).backward()  # a gradient other than 1 into the loss
    (2.5 * hf_loss).backward()
    ours = split_fused({name: p.grad for name, p in model.named_parameters()})
    theirs = {name: p.grad for name, p in hf.named_parameters()}
    assert set(ours) == set(theirs)
    for name, grad in theirs.items():
        assert (ours[name] - grad).abs().max() <= 1e-4 * grad.abs().max(), name
