"""The CPU fast paths: dropout from 16-bit random words (model/fast_dropout.py), bf16 autocast chosen by
`mixed_precision: auto` on CPUs with bf16 matrix instructions, and the int8 layers under bf16 autocast."""
from __future__ import annotations

import pytest
import torch

from adapterkit.model.fast_dropout import drop_positions, dropout, keep_mask, use_fast_dropout
from adapterkit.training import loop


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_keep_rate_matches_p(p):
    torch.manual_seed(0)
    keep = keep_mask((1000, 1000), p)
    assert keep.dtype == torch.bool
    # 1e6 Bernoulli draws: sd of the rate is below 5e-4; p is rounded to 1/65536
    assert abs(keep.float().mean().item() - (1 - p)) < 3e-3
    # no structure along either axis (a bad word split would repeat a pattern every 4 elements)
    cols = keep.float().view(-1, 4).mean(0)
    assert (cols - (1 - p)).abs().max() < 5e-3


@pytest.mark.parametrize("p", [0.01, 0.05, 0.1, 0.25])
def test_drop_positions_are_a_bernoulli_process(p):
    torch.manual_seed(0)
    n = 2_000_000
    pos = drop_positions(n, p)
    assert pos.dtype == torch.int64 and int(pos[0]) >= 0 and int(pos[-1]) < n
    assert bool((pos[1:] > pos[:-1]).all())  # sorted, no position twice
    assert abs(len(pos) / n - p) < 5 * (p * (1 - p) / n) ** 0.5 + 1e-9
    drop = torch.zeros(n, dtype=torch.bool)
    drop[pos] = True
    # independent neighbours and no period-4 pattern
    both = (drop[:-1] & drop[1:]).float().mean().item()
    assert abs(both - p * p) < 5 * (p * p / n) ** 0.5 + 1e-9
    assert (drop.view(-1, 4).float().mean(0) - p).abs().max() < 6 * (4 * p / n) ** 0.5
    assert len(drop_positions(10, 0.05)) <= 10 and len(drop_positions(1, 0.25)) <= 1


@pytest.mark.parametrize("p", [0.05, 0.2, 0.4])
def test_dropout_scales_kept_values_and_masks_the_gradient(p):
    torch.manual_seed(1)
    x = torch.randn(64, 33, requires_grad=True)
    y = dropout(x, p, training=True)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    assert abs(kept.float().mean().item() - (1 - p)) < 0.05
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - p))
    assert dropout(x, p, training=False) is x and dropout(x, 0.0) is x
    t = x.detach().t()  # a non-contiguous input
    yt = dropout(t, p)
    assert yt.shape == t.shape
    torch.testing.assert_close(yt[yt != 0], t[yt != 0] / (1 - p))


def test_dropout_follows_the_seed_and_keeps_the_dtype():
    x = torch.randn(8, 300).bfloat16()
    torch.manual_seed(3)
    a = dropout(x, 0.1)
    torch.manual_seed(3)
    b = dropout(x, 0.1)
    torch.manual_seed(4)
    c = dropout(x, 0.1)
    assert a.dtype == torch.bfloat16
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("p, kind", [(0.1, torch.int64), (0.5, torch.bool)])
def test_backward_keeps_at_most_a_byte_an_element(p, kind):
    x = torch.randn(32, 30, 384, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = dropout(x, p)
    assert [t.dtype for t in saved] == [kind]
    assert sum(t.numel() * t.element_size() for t in saved) <= x.numel()
    y.sum().backward()


def test_model_dropouts_are_switched(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    n = sum(1 for m in model.modules() if type(m) is torch.nn.Dropout and m.p > 0)
    assert n > 0 and use_fast_dropout(model) == n
    ids = torch.randint(5, 100, (2, 9))
    model.eval()
    with torch.no_grad():
        a = model(input_ids=ids).logits
        b = model(input_ids=ids).logits
    assert torch.equal(a, b)  # eval: no dropout
    model.train()
    torch.manual_seed(0)
    c = model(input_ids=ids).logits
    torch.manual_seed(0)
    d = model(input_ids=ids).logits
    assert torch.equal(c, d) and not torch.equal(c, a)  # seeded, and dropping


def test_auto_precision_on_cpu_follows_the_instruction_set(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for bf16, amx, want in ((True, False, "bf16"), (False, True, "bf16"), (False, False, "no")):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert loop.mixed_precision("auto") == want
    assert loop.mixed_precision("no") == "no"


@pytest.mark.parametrize("mode", ["dequantize", "bitsandbytes"])
def test_int8_layers_under_bf16_autocast(mode):
    """Both int8 paths run under CPU bf16 autocast and stay within bf16 round-off of the float32 result; the
    dequantize path computes in bf16 (the weight is dequantized straight to it)."""
    import bitsandbytes as bnb

    from adapterkit.model.fast_int8 import use_dequantize_path

    torch.manual_seed(0)
    dense = torch.nn.Linear(384, 256)
    layer = bnb.nn.Linear8bitLt(384, 256, has_fp16_weights=False, threshold=0.0)
    layer.load_state_dict(dense.state_dict())
    layer = layer.to("cpu")
    holder = torch.nn.Sequential(layer)
    if mode == "dequantize":
        assert use_dequantize_path(holder) == 1
    x = torch.randn(8, 12, 384)
    with torch.no_grad():
        ref = holder(x).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = holder(x)
    if mode == "dequantize":
        assert y.dtype == torch.bfloat16
    rel = ((y.float() - ref).norm() / ref.norm()).item()
    assert rel < 1e-2, rel
