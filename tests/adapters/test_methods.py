"""Adapter methods (issue #3): bottleneck adapters as a PEFT method, IA3, prompt and prefix tuning, LoRA variants.

Per method, on tiny BERT and Llama models (and int8): the adapter starts as the identity where the method allows,
the trainable parameter count equals the closed form, and save -> load gives identical logits."""
import json

import pytest
import torch
from safetensors.torch import load_file

from adapterkit.adapters import method_settings
from adapterkit.config import resolve_paths
from adapterkit.model import recipe_from_dict
from helpers import ROOT, as_recipe, cli, shared_data, smollm2_dir, tiny_recipe

LABELS = ["neg", "pos"]
TEXTS = ["the film was great and really great", "the film was awful", "bad", "a lovely lovely film"]

# Tiny fixture dimensions (conftest): hidden, FFN, layers, key/value width; and the task head's own parameters
# (BERT: classifier + pooler; Llama: score without bias).
DIMS = {"bert": dict(d=64, ff=128, layers=2, kv=64, head=64 * 2 + 2 + 64 * 64 + 64),
        "llama": dict(d=32, ff=64, layers=2, kv=16, head=32 * 2)}

METHODS = {
    "lora": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
    "dora": {"method": "dora", "r": 4, "alpha": 8, "dropout": 0.0},
    "rslora": {"method": "rslora", "r": 4, "alpha": 8, "dropout": 0.0},
    "ia3": {"method": "ia3"},
    "prompt_tuning": {"method": "prompt_tuning", "num_virtual_tokens": 5},
    "prefix_tuning": {"method": "prefix_tuning", "num_virtual_tokens": 5},
    "houlsby": {"method": "bottleneck", "placement": "houlsby", "bottleneck_size": 8, "init_weights": True},
    "pfeiffer": {"method": "bottleneck", "placement": "pfeiffer", "bottleneck_size": 8, "layer_norm": True, "init_weights": True},
    "parallel": {"method": "bottleneck", "placement": "parallel", "bottleneck_size": 8, "scaling": 4.0},
    "houlsby_layer1": {"method": "bottleneck", "placement": "houlsby", "reduction_factor": 4, "bottleneck_size": None, "layers": [1],
                       "init_weights": True},
    "pfeiffer_norms": {"method": "bottleneck", "placement": "pfeiffer", "bottleneck_size": 8, "train_layer_norms": True,
                       "init_weights": True},
}
IDENTITY_AT_INIT = {"lora", "dora", "rslora", "ia3", "houlsby", "pfeiffer", "parallel", "houlsby_layer1", "pfeiffer_norms"}


def linear_shapes(fam):
    """(in, out) of every linear layer inside one block."""
    x = DIMS[fam]
    d, ff, kv = x["d"], x["ff"], x["kv"]
    if fam == "bert":  # query key value, attention.output.dense, intermediate.dense, output.dense
        return {"q": (d, d), "k": (d, kv), "v": (d, kv), "o": (d, d), "up": (d, ff), "down": (ff, d)}
    return {"q": (d, d), "k": (d, kv), "v": (d, kv), "o": (d, d), "gate": (d, ff), "up": (d, ff), "down": (ff, d)}


def expected_adapter_params(fam, name):
    x, s = DIMS[fam], METHODS[name]
    d, L = x["d"], x["layers"]
    shapes = linear_shapes(fam)
    if name in ("lora", "rslora"):
        return L * sum(s["r"] * (i + o) for i, o in shapes.values())
    if name == "dora":  # LoRA plus one magnitude per output feature
        return L * sum(s["r"] * (i + o) + o for i, o in shapes.values())
    if name == "ia3":  # keys and values scale outputs; FFN modules (BERT: both output.dense; Llama: down_proj) scale inputs
        ff_in = shapes["o"][0] + shapes["down"][0] if fam == "bert" else shapes["down"][0]
        return L * (shapes["k"][1] + shapes["v"][1] + ff_in)
    if name == "prompt_tuning":
        return s["num_virtual_tokens"] * d
    if name == "prefix_tuning":  # a key and a value per layer, in the key/value width (GQA: fewer heads)
        return s["num_virtual_tokens"] * L * 2 * x["kv"]
    m = s["bottleneck_size"] or d // s["reduction_factor"]
    per = d * m + m + m * d + d + (2 * d if s.get("layer_norm") else 0)
    n_layers = len(s["layers"]) if s.get("layers") else L
    # train_layer_norms: BERT has two LayerNorms per layer plus the embeddings' one; Llama two RMSNorms (no bias) per layer.
    norms = ((2 * L + 1) * 2 * d if fam == "bert" else 2 * L * d) if s.get("train_layer_norms") else 0
    return per * n_layers * (2 if s["placement"] == "houlsby" else 1) + norms


def _recipe(model_dir, tmp_path, adapter, quant="none", **extra):
    """A Recipe to build (no data is read: the files need not exist) with `adapter` set whole, at `quant`."""
    files = {"train": tmp_path / "t.csv", "validation": tmp_path / "v.csv"}
    return as_recipe(tiny_recipe(model_dir, files, tmp_path / "run", backbone={"quantization": quant},
                                 replace={"adapter": dict(adapter)}, **extra))


def _batch(model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    return tok, tok(TEXTS, padding=True, return_tensors="pt")


@torch.no_grad()
def _logits(model, batch):
    model.eval()
    return model(**batch).logits.float()


def _write_run(model, recipe, tokenizer, head_modules, run_dir):
    from adapterkit.runs import RunWriter

    w = RunWriter(run_dir, recipe)
    w.check_writable()
    w.start(tokenizer, LABELS, {})
    w.save_weights(model, head_modules)
    w.finish({})


@pytest.mark.parametrize("quant", ["none", "int8"])
@pytest.mark.parametrize("fam", ["bert", "llama"])
@pytest.mark.parametrize("name", list(METHODS))
def test_method_identity_count_and_round_trip(name, fam, quant, request, tmp_path):
    from adapterkit.model import build, load_run

    model_dir = request.getfixturevalue(f"tiny_{fam}")
    recipe = _recipe(model_dir, tmp_path, METHODS[name], quant)
    torch.manual_seed(0)
    model, head_modules = build(recipe, LABELS)
    tok, batch = _batch(model_dir)

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == expected_adapter_params(fam, name) + DIMS[fam]["head"]

    at_init = _logits(model, batch)
    if name in IDENTITY_AT_INIT:  # prompt methods add tokens: no identity (and PEFT's disable_adapter breaks there)
        with model.disable_adapter():
            base = _logits(model, batch)
        assert torch.allclose(at_init, base, atol=1e-5), (at_init - base).abs().max()

    # Move every trained weight (adapter and head) away from its initial value, then save and reload.
    g = torch.Generator().manual_seed(1)
    for p in model.parameters():
        if p.requires_grad:
            p.data.add_(torch.randn(p.shape, generator=g).to(p.dtype) * 0.2)
    trained = _logits(model, batch)
    assert not torch.allclose(at_init, trained, atol=1e-4)
    if name in IDENTITY_AT_INIT:
        with model.disable_adapter():
            assert not torch.allclose(_logits(model, batch), trained, atol=1e-4), "the adapter has no effect"
    run = tmp_path / "run"
    _write_run(model, recipe, tok, head_modules, run)
    loaded = load_run(run).model
    torch.testing.assert_close(_logits(loaded, batch), trained, atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("fam,method", [("bert", "prompt_tuning"), ("llama", "prefix_tuning"), ("bert", "houlsby")])
def test_head_trains_saves_and_reloads(fam, method, request, sentiment_files, tmp_path):
    """PEFT wraps classifier/score for SEQ_CLS prompt methods; the head must still train, land in head.safetensors
    and in the PEFT adapter, and reload to the same weights and the same validation score."""
    from accelerate.utils import set_seed

    from adapterkit.model import build_task_model
    from adapterkit.inference import eval_run
    from adapterkit.model import load_run
    from adapterkit.training import train

    model_dir = request.getfixturevalue(f"tiny_{fam}")
    r = tiny_recipe(model_dir, sentiment_files, tmp_path / "run", training={"epochs": 1, "lr": 1e-2})
    r["adapter"] = dict(METHODS[method])
    recipe = resolve_paths(recipe_from_dict(r))
    final = train(recipe)
    set_seed(recipe.training.seed)
    initial, _ = build_task_model(recipe, LABELS)  # the same seeded initial head training started from
    head_name = "classifier" if fam == "bert" else "score"
    head = load_file(tmp_path / "run" / "head.safetensors")
    assert not torch.allclose(head[f"{head_name}.weight"], initial.get_submodule(head_name).weight), "head did not train"
    model = load_run(tmp_path / "run").model
    inner = model.get_base_model()
    assert torch.equal(inner.get_submodule(head_name).weight, head[f"{head_name}.weight"])
    if method != "houlsby":  # PEFT's own copy (so plain PeftModel.from_pretrained works) holds the trained head too
        adapter = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
        copy = next(v for k, v in adapter.items() if k.endswith(f"{head_name}.weight"))
        assert torch.equal(copy, head[f"{head_name}.weight"])
    assert eval_run(tmp_path / "run")["loss"] == pytest.approx(final["validation"]["loss"], abs=1e-5)


def test_bottleneck_config_is_a_peft_method(tmp_path):
    """Plain PEFT API: get_peft_model -> save_pretrained -> PeftModel.from_pretrained, once adapterkit is imported."""
    from peft import PeftModel, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    import adapterkit

    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    torch.manual_seed(0)
    model = get_peft_model(BertForSequenceClassification(cfg),
                           adapterkit.BottleneckConfig(placement="houlsby", bottleneck_size=4, init_weights=False, task_type="SEQ_CLS"))
    x = torch.randint(1, 50, (2, 6))
    out = _logits(model, {"input_ids": x})
    model.save_pretrained(tmp_path / "a")
    saved = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "BOTTLENECK" and saved["placement"] == "houlsby"
    keys = set(load_file(tmp_path / "a" / "adapter_model.safetensors"))
    # up-projection weight and bias, 2 layers x 2 places; the frozen base weights are not in the adapter file
    assert sum("bottleneck_up" in k for k in keys) == 8 and not any("base_layer" in k for k in keys)
    torch.manual_seed(0)
    loaded = PeftModel.from_pretrained(BertForSequenceClassification(cfg), tmp_path / "a")
    assert isinstance(loaded.peft_config["default"], adapterkit.BottleneckConfig)
    torch.testing.assert_close(_logits(loaded, {"input_ids": x}), out, atol=0, rtol=0)
    with pytest.raises(ValueError, match="not mergeable"):
        loaded.merge_and_unload()


@pytest.mark.parametrize("fam", ["bert", "llama"])
def test_bottleneck_placements_wrap_the_right_modules(fam):
    from peft import get_peft_model
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel

    import adapterkit
    from adapterkit.adapters.bottleneck import BottleneckLayer

    if fam == "bert":
        make = lambda: BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64))
        attn, ffn, block = "encoder.layer.{}.attention.output.dense", "encoder.layer.{}.output.dense", "encoder.layer.{}.output"
    else:
        make = lambda: LlamaModel(LlamaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                              num_key_value_heads=2, intermediate_size=64))
        attn, ffn, block = "layers.{}.self_attn.o_proj", "layers.{}.mlp.down_proj", "layers.{}.mlp"
    expected = {"houlsby": [attn, ffn], "pfeiffer": [ffn], "parallel": [block]}
    for placement, patterns in expected.items():
        for layers in (None, [0, 2]):
            m = get_peft_model(make(), adapterkit.BottleneckConfig(placement=placement, bottleneck_size=4, layers_to_transform=layers))
            got = sorted(n.removeprefix("base_model.model.") for n, mod in m.named_modules() if isinstance(mod, BottleneckLayer))
            want = sorted(p.format(i) for p in patterns for i in (layers or range(3)))
            assert got == want, placement


def test_bottleneck_gradients_reach_only_the_adapter_on_int8(tiny_bert, tmp_path):
    from adapterkit.model import build

    recipe = _recipe(tiny_bert, tmp_path, METHODS["houlsby"], "int8")
    model, _ = build(recipe, LABELS)
    _, batch = _batch(tiny_bert)
    model.train()
    model(**batch, labels=torch.tensor([1, 0, 0, 1])).loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    ups = [g for n, g in grads.items() if "bottleneck_up" in n]
    assert len(ups) == 2 * 2 * 2 and all(g is not None and g.abs().sum() > 0 for g in ups)  # 2 layers x 2 places x (w, b)
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "bottleneck_" in n)


def test_peft_registry_version_guard():
    from peft.utils import PeftType

    from adapterkit.adapters import _peft_registry as reg
    from adapterkit.adapters.bottleneck import BottleneckConfig, BottleneckModel

    reg.check_peft_version("0.18.0")
    reg.check_peft_version("0.21.2")
    for bad in ("0.17.1", "0.22.0", "1.0.0"):
        with pytest.raises(reg.PeftCompatibilityError, match=rf"peft {bad} is not supported.*>=0\.18,<0\.22"):
            reg.check_peft_version(bad)
    # Registering again is a no-op returning the same enum member; PEFT resolves the saved name to it.
    assert reg.register_peft_method("bottleneck", BottleneckConfig, BottleneckModel, prefix="bottleneck_") is PeftType.BOTTLENECK
    assert PeftType("BOTTLENECK") is PeftType.BOTTLENECK and "BOTTLENECK" in [t.value for t in PeftType]


@pytest.mark.parametrize("adapter,where,message", [
    ({"method": "bottleneck", "placement": "sideways"}, "recipe", "adapter.placement"),
    ({"method": "bottleneck", "r": 8}, "recipe", "adapter.r"),
    ({"method": "prompt_tuning", "num_virtual_tokens": 0}, "recipe", "adapter.num_virtual_tokens"),
    ({"method": "bottleneck", "layers": [7]}, "build", "adapter.layers: [7] out of range"),
    ({"method": "bottleneck", "activation": "nope"}, "build", "adapter.activation"),
    ({"method": "ia3", "target_modules": ["key"], "feedforward_modules": ["value"]}, "build", "adapter.feedforward_modules"),
])
def test_bad_method_settings_fail_in_one_line(adapter, where, message, tiny_bert, tmp_path):
    from adapterkit.errors import AdapterkitError
    from adapterkit.model import build

    with pytest.raises(AdapterkitError) as e:
        recipe = _recipe(tiny_bert, tmp_path, adapter)
        assert where == "build"
        build(recipe, LABELS)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_inspect_reports_targets_and_counts(tiny_llama):
    res = cli("inspect", tiny_llama, "--method", "bottleneck", "--method", "ia3", "--method", "lora",
              "--set", "placement=houlsby", "--set", "bottleneck_size=8", "--set", "r=4", "--json")
    assert res.code == 0, res.err
    report = json.loads(res.out)
    head = DIMS["llama"]["head"]
    m = report["methods"]
    assert m["bottleneck"]["trainable_params"] == expected_adapter_params("llama", "houlsby") + head
    assert m["ia3"]["trainable_params"] == expected_adapter_params("llama", "ia3") + head
    assert m["lora"]["trainable_params"] == expected_adapter_params("llama", "lora") + head
    assert m["bottleneck"]["targets"] == ["model.layers.*.mlp.down_proj (x2)", "model.layers.*.self_attn.o_proj (x2)"]
    assert m["bottleneck"]["trainable_share"] == pytest.approx(m["bottleneck"]["trainable_params"] / report["total_params"], abs=1e-6)
    assert any("ModuleList x 2" in line for line in report["tree"])
    res = cli("inspect", tiny_llama, "--method", "ia3", "--set", "bottleneck_size=8")
    assert res.code == 2 and "--set: ['bottleneck_size'] is not a setting" in res.err


@pytest.mark.slow
def test_smollm2_prompt_tuning_recipe_trains(tmp_path):
    """Acceptance 3: the SmolLM2 prompt-tuning recipe runs (a few steps on a slice of SST-2)."""
    from adapterkit.model import load_recipe
    from adapterkit.training import train

    smollm2_dir()
    sst2 = shared_data("sst2")
    recipe = resolve_paths(load_recipe(ROOT / "recipes" / "smollm2-prompt-tuning.yaml", [
        f"data.train={sst2 / 'train.tsv'}", f"data.validation={sst2 / 'validation.tsv'}", "data.max_train_samples=24",
        "data.max_eval_samples=16", "data.max_length=32", "training.max_steps=3", "training.batch_size=8",
        f"training.output_dir={tmp_path / 'run'}"]))
    final = train(recipe)
    assert final["train"]["steps"] == 3 and 0.0 <= final["validation"]["accuracy"] <= 1.0
    cfg = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "PROMPT_TUNING" and cfg["num_virtual_tokens"] == method_settings(recipe.adapter).num_virtual_tokens
    assert final["train"]["trainable_params"] == method_settings(recipe.adapter).num_virtual_tokens * 576 + 576 * 2  # prompt + score
