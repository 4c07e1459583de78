"""Freezing strategies (`adapter.layers: top:N`, `full` with `trainable_layers`), LoRA settings passed through to
PEFT, switching methods with --set, methods registered by `adapter.plugin`, and warm starts (`adapter.init_from`)."""
import json
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers import cli, save_tokenizer, tiny_recipe, write_recipe, write_sentiment


def _recipe(tiny_bert, files, out, adapter, **sections):
    """The tiny recipe with `adapter` set whole (these tests pick each method's settings), as a Recipe."""
    import adapterkit

    return adapterkit.recipe_from_dict(tiny_recipe(tiny_bert, files, out, replace={"adapter": adapter}, **sections))


@pytest.mark.parametrize("method,extra", [("lora", {"r": 4}), ("ia3", {}), ("bottleneck", {"bottleneck_size": 8}),
                                          ("peft", {"peft_type": "loha", "r": 4})])
def test_layers_top_2_adapts_only_the_two_top_blocks(method, extra, tmp_path, sentiment_files):
    """A 4-block BERT: adapters land in blocks 2 and 3 only, for every method that targets layers."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers import BertConfig, BertModel

    from adapterkit.model import build

    d = tmp_path / "bert4"
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                         architectures=["BertModel"])).save_pretrained(d)
    save_tokenizer(d)
    model, _ = build(_recipe(d, sentiment_files, tmp_path / "o", {"method": method, "layers": "top:2", **extra}), ["neg", "pos"])
    adapted = {n for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)}
    blocks = {int(n.split(".layer.")[1].split(".")[0]) for n in adapted}
    assert adapted and blocks == {2, 3}, sorted(adapted)
    everywhere, _ = build(_recipe(d, sentiment_files, tmp_path / "o", {"method": method, **extra}), ["neg", "pos"])
    assert len([m for m in everywhere.modules() if isinstance(m, BaseTunerLayer)]) == 2 * len(adapted)


@pytest.mark.slow
def test_full_with_trainable_layers_leaves_other_blocks_bit_identical(tiny_bert, sentiment_files, tmp_path):
    from adapterkit.training import train

    train(_recipe(tiny_bert, sentiment_files, tmp_path / "run", {"method": "full", "trainable_layers": 1},
                  training={"epochs": 1, "lr": 1e-3}))
    before = load_file(tiny_bert / "model.safetensors")
    after = load_file(tmp_path / "run" / "model" / "model.safetensors")
    after = {k.removeprefix("bert."): v for k, v in after.items()}
    changed = {k for k in before if k in after and not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("encoder.layer.1.", "pooler.")) for k in changed), sorted(changed)[:5]  # top block + head
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("encoder.layer.0.", "embeddings.")))


def test_full_with_zero_trainable_layers_trains_the_head_alone(tiny_bert, sentiment_files, tmp_path):
    from adapterkit.model import build

    model, heads = build(_recipe(tiny_bert, sentiment_files, tmp_path / "o", {"method": "full", "trainable_layers": 0}), ["neg", "pos"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(tuple(heads)) for n in trainable), sorted(trainable)


def test_lora_settings_pass_through_to_peft(tiny_bert, sentiment_files, tmp_path):
    from adapterkit.model import build
    from adapterkit.training.loop import param_groups

    r = _recipe(tiny_bert, sentiment_files, tmp_path / "o", {"method": "lora", "r": 4, "rank_pattern": {"query": 8}, "use_rslora": True,
                                                             "init_lora_weights": "gaussian", "loraplus_lr_ratio": 16})
    model, heads = build(r, ["neg", "pos"])
    cfg = model.peft_config["default"]
    assert (cfg.rank_pattern, cfg.use_rslora, cfg.init_lora_weights) == ({"query": 8}, True, "gaussian")
    q = model.get_submodule("base_model.model.bert.encoder.layer.0.attention.self.query")
    assert q.lora_A["default"].weight.shape[0] == 8 and q.lora_B["default"].weight.abs().sum() == 0
    lrs = {(g["lr"], any(p is q.lora_B["default"].weight for p in g["params"])) for g in param_groups(model, r, heads)}
    assert (r.training.lr * 16, True) in lrs  # LoRA+: B learns 16x faster; A and the head keep training.lr


@pytest.mark.slow
def test_pissa_init_is_saved_as_a_plain_lora_delta(tiny_bert, sentiment_files, tmp_path):
    """PiSSA moves the base weights; the run is saved converted against the original base, so it reloads and merges."""
    import adapterkit
    from adapterkit.deploy import export
    from adapterkit.inference import eval_run

    final = adapterkit.train(_recipe(tiny_bert, sentiment_files, tmp_path / "run", {"method": "lora", "r": 4, "init_lora_weights": "pissa"},
                                     training={"max_steps": 4}))
    cfg = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["init_lora_weights"] is True and not (tmp_path / "run" / "adapter_init").exists()
    assert abs(eval_run(tmp_path / "run")["loss"] - final["validation"]["loss"]) < 1e-4
    report = export(tmp_path / "run", tmp_path / "merged", requantize=False)
    assert report["merged_vs_unmerged"]["max_abs_diff"] < 1e-4


def test_switching_method_from_the_command_line_drops_the_other_settings(tiny_bert, sentiment_files, tmp_path, capsys):
    import adapterkit
    from adapterkit.errors import RecipeError

    r = tiny_recipe(tiny_bert, sentiment_files, tmp_path / "o")  # a LoRA recipe: r, alpha, dropout
    rec = adapterkit.recipe_from_dict(r, ["adapter.method=bottleneck"])
    # dropout is a bottleneck setting too, so it stays; r and alpha are LoRA's only
    assert rec.adapter.method == "bottleneck" and rec.adapter.settings() == {"dropout": 0.0}
    assert "drops the recipe's adapter.r, adapter.alpha (lora settings)" in capsys.readouterr().err
    rec = adapterkit.recipe_from_dict(r, ["adapter.method=bottleneck", "adapter.bottleneck_size=8"])
    assert rec.adapter.settings() == {"dropout": 0.0, "bottleneck_size": 8}
    with pytest.raises(RecipeError, match="adapter.r: unknown key"):  # written beside the method, still rejected
        adapterkit.recipe_from_dict({**r, "adapter": {"method": "bottleneck", "r": 4}})


def test_a_plugin_registers_a_method(tiny_bert, sentiment_files, tmp_path, monkeypatch):
    import adapterkit
    from adapterkit.adapters import METHODS
    from adapterkit.model import build

    (tmp_path / "probe_methods.py").write_text(
        "from pydantic import Field\n"
        "from adapterkit.adapters import Method, MethodSettings, register_method\n"
        "class S(MethodSettings):\n"
        "    width: int = Field(2, gt=0)\n"
        "def build(s, model, ctx):\n"
        "    from peft import LoraConfig\n"
        "    return LoraConfig(r=s.width, target_modules=['query'])\n"
        "register_method(Method('query_lora', S, build, mergeable=True))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = tiny_recipe(tiny_bert, sentiment_files, tmp_path / "o")
    r["adapter"] = {"plugin": "probe_methods", "method": "query_lora", "width": 3}
    recipe = adapterkit.recipe_from_dict(r)
    model, _ = build(recipe, ["neg", "pos"])
    assert model.peft_config["default"].r == 3 and recipe.to_dict()["adapter"]["plugin"] == "probe_methods"
    METHODS.pop("query_lora")
    sys.modules.pop("probe_methods")


@pytest.mark.slow
def test_warm_start_continues_a_run_and_checks_labels(tiny_bert, tmp_path):
    import adapterkit

    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    first, second = write_sentiment(tmp_path / "a", seed=1), write_sentiment(tmp_path / "b", seed=2)
    lora = {"method": "lora", "r": 4, "alpha": 8}
    mean = {"type": "sequence_classification", "pooling": "mean"}  # a random tiny encoder learns through mean pooling
    adapterkit.train(_recipe(tiny_bert, first, tmp_path / "first", lora, task=mean, training={"epochs": 3, "lr": 1e-2}))
    for name, adapter in (("second", {**lora, "init_from": str(tmp_path / "first")}), ("cold", lora)):
        adapterkit.train(_recipe(tiny_bert, second, tmp_path / name, adapter, task=mean,
                                 training={"epochs": 1, "lr": 1e-2, "log_every": 1}))
    info = json.loads((tmp_path / "second" / "run.json").read_text())
    assert info["init_from"]["kind"] == "run" and info["init_from"]["head"] is True
    saved = yaml.safe_load((tmp_path / "second" / "recipe.yaml").read_text())
    assert saved["adapter"]["init_from"] == str(tmp_path / "first")
    # It started from the first run's adapter and head: its first steps' loss is far below a cold start's.
    first_loss = {n: next(json.loads(l)["loss"] for l in (tmp_path / n / "log.jsonl").read_text().splitlines()
                          if '"loss"' in l and '"event"' not in l) for n in ("second", "cold")}
    assert first_loss["second"] < first_loss["cold"] - 0.1, first_loss
    # Another label set: one line, unless task.labels names the new set (kept classes keep their rows).
    files = write_sentiment(tmp_path / "c")
    for split in ("train", "validation"):
        files[split].write_text(files[split].read_text().replace(",pos", ",good"))
    r = tiny_recipe(tiny_bert, files, tmp_path / "third", task=mean,
                    replace={"adapter": {"method": "lora", "r": 4, "alpha": 8, "init_from": str(tmp_path / "first")}})
    res = cli("train", write_recipe(tmp_path / "third.yaml", r))
    err = [l for l in res.err_lines if "kernels" not in l]
    assert res.code == 2 and len(err) == 1 and "adapter.init_from:" in err[0] and "task.labels" in err[0], err
    r["task"] = {**mean, "labels": ["neg", "good"]}
    res = cli("train", write_recipe(tmp_path / "third.yaml", r))
    assert res.code == 0, res.err
    info = json.loads((tmp_path / "third" / "run.json").read_text())
    assert info["init_from"]["kept_labels"] == ["neg"] and info["init_from"]["new_labels"] == ["good"]


def test_loftq_init_shrinks_the_4bit_quantization_error(tiny_bert, sentiment_files, tmp_path):
    import bitsandbytes as bnb

    from adapterkit.errors import ModelError
    from adapterkit.model import build

    lora = {"method": "lora", "r": 8, "init_lora_weights": "loftq"}
    model, _ = build(_recipe(tiny_bert, sentiment_files, tmp_path / "o", lora, backbone={"quantization": "nf4"}), ["neg", "pos"])
    original = load_file(tiny_bert / "model.safetensors")
    for block in ("attention.self.query", "intermediate.dense"):
        q = model.get_submodule(f"base_model.model.bert.encoder.layer.0.{block}")
        w = q.get_base_layer().weight
        quantized = bnb.functional.dequantize_4bit(w.data, w.quant_state).float()
        delta = q.scaling["default"] * (q.lora_B["default"].weight @ q.lora_A["default"].weight)
        exact = original[f"encoder.layer.0.{block}.weight"]
        assert (exact - quantized - delta).norm() < 0.95 * (exact - quantized).norm()  # the adapter absorbs part of the error
    with pytest.raises(ModelError, match="loftq .* set backbone.quantization: nf4"):
        build(_recipe(tiny_bert, sentiment_files, tmp_path / "o", lora, backbone={"quantization": "int8"}), ["neg", "pos"])
