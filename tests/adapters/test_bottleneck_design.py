"""Bottleneck design settings (issue #23): what the adapter reads (`adapter_input`), its initialisation, and that the
AdapterHub-equivalent settings compute what they say, count the same parameters and survive save -> load."""
import pytest
import torch
from torch import nn

from adapterkit.errors import ModelError
from helpers import as_recipe, tiny_recipe

LABELS = ["neg", "pos"]
TEXTS = ["the film was great and really great", "the film was awful", "bad", "a lovely lovely film"]


def _bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, hidden_dropout_prob=0.0))


def _peft(placement, **kw):
    from peft import get_peft_model

    import adapterkit

    return get_peft_model(_bert(), adapterkit.BottleneckConfig(placement=placement, bottleneck_size=4, **kw)).eval()


@pytest.mark.parametrize("placement,wrapped", [("pfeiffer", ["output"]), ("houlsby", ["attention.output", "output"])])
def test_post_norm_wraps_the_output_blocks_and_starts_as_the_base(placement, wrapped):
    from adapterkit.adapters.bottleneck import BottleneckLayer

    m = _peft(placement, adapter_input="post_norm")
    got = sorted(n.removeprefix("base_model.model.encoder.layer.") for n, mod in m.named_modules() if isinstance(mod, BottleneckLayer))
    assert got == sorted(f"{i}.{w}" for i in range(2) for w in wrapped)
    x = torch.randint(1, 50, (2, 7))
    with torch.no_grad():
        out = m(input_ids=x).last_hidden_state
        with m.disable_adapter():
            base = m(input_ids=x).last_hidden_state
    torch.testing.assert_close(out, base, atol=1e-6, rtol=0)   # zero up-projection: the identity at start
    # same adapter shapes as reading the projection
    count = lambda model: sum(p.numel() for n, p in model.named_parameters() if "bottleneck_" in n)
    assert count(m) == count(_peft(placement)) == len(got) * (32 * 4 + 4 + 4 * 32 + 32)


def test_post_norm_computes_layernorm_of_projection_residual_and_adapter_of_the_normed_state():
    m = _peft("pfeiffer", adapter_input="post_norm", init_weights="bert")
    layer = m.base_model.model.encoder.layer[0].output
    blk = layer.get_base_layer()
    down, up = layer.bottleneck_down["default"], layer.bottleneck_up["default"]
    hidden, residual = torch.randn(2, 5, 64), torch.randn(2, 5, 32)
    h = blk.dense(hidden) + residual
    want = blk.LayerNorm(h + up(torch.relu(down(blk.LayerNorm(h)))))
    torch.testing.assert_close(layer(hidden, residual), want)
    # the projection-reading form differs on the same weights: LayerNorm(h' + up(relu(down(h'))) + residual), h' = dense(x)
    p = blk.dense(hidden)
    assert not torch.allclose(blk.LayerNorm(p + up(torch.relu(down(p))) + residual), want, atol=1e-4)


def test_bert_init_draws_both_projections_small_and_is_not_the_identity():
    m = _peft("houlsby", init_weights="bert")
    for name, p in m.named_parameters():
        if "bottleneck_" in name and name.endswith("weight"):
            assert 0.01 < p.std().item() < 0.03, name
        if "bottleneck_" in name and name.endswith("bias"):
            assert torch.count_nonzero(p) == 0, name
    x = torch.randint(1, 50, (2, 7))
    with torch.no_grad():
        out = m(input_ids=x).last_hidden_state
        with m.disable_adapter():
            base = m(input_ids=x).last_hidden_state
    assert not torch.allclose(out, base, atol=1e-5)


@pytest.mark.parametrize("bad,err", [({"adapter_input": "sideways"}, "adapter_input"), ({"init_weights": "xavier"}, "init_weights"),
                                     ({"placement": "parallel", "adapter_input": "post_norm"}, "post_norm")])
def test_bad_design_settings_name_the_field(bad, err):
    import adapterkit

    with pytest.raises(ValueError, match=err):
        adapterkit.BottleneckConfig(**{"placement": "pfeiffer", **bad})


def _recipe(model_dir, tmp_path, adapter, quant="none"):
    """A Recipe to build (no data is read: the files need not exist) with `adapter` set whole, at `quant`."""
    files = {"train": tmp_path / "t.csv", "validation": tmp_path / "v.csv"}
    return as_recipe(tiny_recipe(model_dir, files, tmp_path / "run", backbone={"quantization": quant},
                                 replace={"adapter": dict(adapter)}))


def test_post_norm_on_a_pre_norm_decoder_is_one_clear_error(tiny_llama, tmp_path):
    from adapterkit.model import build

    recipe = _recipe(tiny_llama, tmp_path, {"method": "bottleneck", "adapter_input": "post_norm"})
    with pytest.raises(ModelError, match=r"adapter\.adapter_input: post_norm needs a post-norm encoder"):
        build(recipe, LABELS)


@pytest.mark.parametrize("quant", ["none", "int8"])
def test_adapterhub_equivalent_settings_round_trip(tiny_bert, tmp_path, quant):
    """Pfeiffer as AdapterHub's seq_bn (post-norm input, bert init) on int8: gradients reach the adapter, and the saved
    run reloads to the same logits."""
    from transformers import AutoTokenizer

    from adapterkit.model import build, load_run
    from adapterkit.runs import RunWriter

    recipe = _recipe(tiny_bert, tmp_path, {"method": "bottleneck", "placement": "pfeiffer", "bottleneck_size": 8,
                                           "adapter_input": "post_norm", "init_weights": "bert"}, quant)
    torch.manual_seed(0)
    model, head_modules = build(recipe, LABELS)
    tok = AutoTokenizer.from_pretrained(tiny_bert)
    batch = tok(TEXTS, padding=True, return_tensors="pt")
    model.train()
    model(**batch, labels=torch.tensor([1, 0, 0, 1])).loss.backward()
    ups = [p.grad for n, p in model.named_parameters() if "bottleneck_up" in n]
    assert len(ups) == 4 and all(g is not None and g.abs().sum() > 0 for g in ups)
    model.eval()
    with torch.no_grad():
        before = model(**batch).logits.float()
    w = RunWriter(tmp_path / "run", recipe)
    w.check_writable()
    w.start(tok, LABELS, {})
    w.save_weights(model, head_modules)
    w.finish({})
    loaded = load_run(tmp_path / "run").model
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits.float(), before, atol=1e-5, rtol=0)
