"""Several runs on one base model: each equals the run loaded alone (logits within 1e-5, labels exactly), the base is
one copy, mixed batches route each row to its own adapter and head, and unloading gives the memory back."""
from __future__ import annotations

import json
import random

import pytest
import torch

from helpers import cli

TEXTS = ["a good thing", "bad bad awful terrible product here", "ok", "what a lovely day it was", "broken"]


def _logits(run, texts=TEXTS):
    from adapterkit.inference.run import predict_logits

    return predict_logits(run.model, run.tokenizer, texts, run.recipe.data.max_length)


@pytest.fixture(scope="module")
def pool(base_runs):
    from adapterkit.inference.pool import open_pool

    return open_pool([base_runs[n] for n in ("lora0", "lora1", "bottleneck0", "bottleneck1", "ia3", "prompt", "ner")])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lora0", "bottleneck0", "ia3", "prompt", "ner"])
def test_each_method_family_on_the_shared_base_equals_the_run_alone(pool, base_runs, name):
    from adapterkit.inference import predict
    from adapterkit.model import load_run

    alone = load_run(base_runs[name])
    shared = pool.get(name)
    assert shared.model is not alone.model
    if name == "ner":
        sentences = ["John went to Paris", "Mary met Anna in New York"]
        assert pool.predict(name, sentences) == predict(base_runs[name], sentences)
    else:
        assert torch.allclose(_logits(shared), _logits(alone), atol=1e-5, rtol=0)
        assert pool.predict(name, TEXTS) == predict(base_runs[name], TEXTS)


@pytest.mark.slow
def test_the_base_is_one_copy_and_runs_of_a_mixing_method_share_one_peft_model(pool):
    base = {p.data_ptr() for m in pool.base.parts.values() for p in m.parameters(recurse=False)}
    for name in ("lora0", "bottleneck0", "ia3", "prompt", "ner"):
        own = {p.data_ptr() for p in pool.get(name).model.parameters()}
        assert len(base & own) > 10
        assert not [n for n, p in pool.get(name).model.named_parameters()
                    if ("encoder.layer" in n and n.endswith("dense.base_layer.weight")) and p.data_ptr() not in base]
    assert pool.runs["lora0"].model is pool.runs["lora1"].model  # one PEFT model, two adapters by name
    assert pool.runs["bottleneck0"].model is pool.runs["bottleneck1"].model
    assert pool.runs["ia3"].model is not pool.runs["lora0"].model  # its own model over the same base tensors


@pytest.mark.slow
def test_a_mixed_batch_gives_every_row_its_own_runs_prediction(pool, base_runs):
    from adapterkit.inference import predict

    rnd = random.Random(0)
    names = ["lora0", "lora1", "bottleneck0", "bottleneck1", "ia3", "prompt"]
    items = [(rnd.choice(names), rnd.choice(TEXTS)) for _ in range(40)]
    alone = {n: dict(zip(TEXTS, predict(base_runs[n], TEXTS))) for n in names}
    assert pool.predict_rows(items) == [alone[n][t] for n, t in items]


@pytest.mark.slow
@pytest.mark.parametrize("first,second", [("lora0", "lora1"), ("bottleneck0", "bottleneck1")])
def test_mixed_batch_logits_equal_each_run_alone(pool, base_runs, first, second):
    from adapterkit.inference.run import predict_logits
    from adapterkit.model import load_run

    group = pool.groups[pool.group_of[first]]
    names = [first, second, second, first, second]
    run = pool.get(first)
    with group.rows(names) as forward:  # runs interleaved: every row its own span
        mixed = predict_logits(run.model, run.tokenizer, TEXTS, run.recipe.data.max_length, forward=forward)
    for name in (first, second):
        rows = [i for i, n in enumerate(names) if n == name]
        alone = _logits(load_run(base_runs[name]), [TEXTS[i] for i in rows])
        assert torch.allclose(mixed[rows], alone, atol=1e-5, rtol=0)
    assert not torch.allclose(mixed[0], _logits(load_run(base_runs[second]), TEXTS[:1])[0], atol=1e-4)


@pytest.mark.slow
def test_a_full_fine_tuning_run_is_refused_with_the_reason(pool, base_runs):
    from adapterkit.errors import AdapterkitError

    with pytest.raises(AdapterkitError, match="trains every weight.*no base to share"):
        pool.add(base_runs["full"])
    assert "full" not in pool.names()


@pytest.mark.slow
def test_runs_on_another_base_or_loaded_otherwise_are_refused_naming_both(base_runs, lm_runs, tmp_path):
    import shutil

    import yaml

    res = cli("predict", base_runs["lora0"], lm_runs["lm1"], "--text", "x")
    assert res.code == 2 and len(res.err_lines) == 1
    assert str(lm_runs["lm1"]) in res.err and str(base_runs["lora0"]) in res.err and "same base" in res.err
    other = tmp_path / "lora_int8"
    shutil.copytree(base_runs["lora1"], other)
    recipe = yaml.safe_load((other / "recipe.yaml").read_text())
    recipe["backbone"]["quantization"] = "int8"
    (other / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    res = cli("predict", base_runs["lora0"], other, "--text", "x")
    assert res.code == 2 and "quantization int8" in res.err and "quantization none" in res.err, res.err


@pytest.mark.slow
def test_predict_and_eval_take_several_runs_and_name_them(base_runs):
    from adapterkit.inference import eval_run, predict

    res = cli("predict", base_runs["lora0"], f"second={base_runs['ia3']}", "--text", "good", "--text", "bad")
    assert res.code == 0, res.err
    rows = [json.loads(l) for l in res.out.splitlines()]
    assert [r["run"] for r in rows] == ["lora0", "lora0", "second", "second"]
    assert [{k: v for k, v in r.items() if k != "run"} for r in rows[2:]] == predict(base_runs["ia3"], ["good", "bad"])
    res = cli("eval", base_runs["lora0"], base_runs["bottleneck0"])
    assert res.code == 0, res.err
    metrics = json.loads(res.out)
    assert set(metrics) == {"lora0", "bottleneck0"}
    assert metrics["bottleneck0"] == pytest.approx(eval_run(base_runs["bottleneck0"]), abs=1e-6)
    res = cli("predict", base_runs["lora0"], base_runs["lora0"], "--text", "x")
    assert res.code == 2 and "run name 'lora0' is taken" in res.err


@pytest.mark.slow
def test_generate_with_two_causal_lm_runs_equals_each_alone(lm_runs):
    from adapterkit.inference import generate

    prompts = ["what color is item 1 ?", "what color is item 3 ?"]
    res = cli("generate", lm_runs["lm1"], lm_runs["lm2"], "--prompt", prompts[0], "--prompt", prompts[1])
    assert res.code == 0, res.err
    rows = [json.loads(l) for l in res.out.splitlines()]
    for name in ("lm1", "lm2"):
        mine = [{k: v for k, v in r.items() if k != "run"} for r in rows if r["run"] == name]
        assert mine == generate(lm_runs[name], prompts)
    assert [r["completion"] for r in rows[:2]] != [r["completion"] for r in rows[2:]]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@pytest.mark.slow
def test_fifty_load_and_unload_cycles_give_the_memory_back(base_runs):
    from adapterkit.inference.pool import RunPool, release_memory

    pool = RunPool()
    pool.add(base_runs["ia3"])  # keeps the base loaded while the others come and go
    names = ["lora0", "lora1", "bottleneck0", "prompt"]

    def cycle(i):  # one run loaded, used and unloaded; the methods take turns
        name = pool.add(base_runs[names[i % len(names)]])
        assert pool.predict(name, ["good"])
        pool.remove(name)

    for i in range(8):  # first loads fill caches (tokenizers, kernels) once
        cycle(i)
    release_memory()
    before = _rss()
    for i in range(50):
        cycle(i)
    release_memory()
    growth = (_rss() - before) / before
    assert pool.names() == ["ia3"] and not pool.groups
    assert growth < 0.05, f"RSS grew {growth:.1%} over 50 cycles"


@pytest.mark.slow
def test_an_int8_shared_base_equals_each_int8_run_alone(base_runs):
    from adapterkit.inference.pool import RunPool
    from adapterkit.model import load_run

    pool = RunPool(quantization="int8")
    for name in ("lora0", "ia3", "ner"):
        pool.add(base_runs[name])
    assert type(pool.base.parts["body.encoder.layer.0.attention.self.query"]).__name__ == "Linear8bitLt"
    for name in ("lora0", "ia3"):
        alone = load_run(base_runs[name], quantization="int8")
        assert torch.allclose(_logits(pool.get(name)), _logits(alone), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_parallel_heads_of_different_widths_answer_in_one_pass_as_each_run_alone(base_runs, tiny_bert, tmp_path):
    """AdapterHub's `Parallel`: a 2-class and a 3-class LoRA run share one PEFT model; `parallel` runs every text
    through both adapters and heads in one forward pass, and each run's rows equal that run alone."""
    import csv

    import adapterkit
    from adapterkit.inference import predict
    from adapterkit.inference.pool import open_pool
    from adapterkit.inference.run import predict_logits
    from adapterkit.model import load_run
    from helpers import tiny_recipe

    rnd = random.Random(3)
    files = {}
    for split, n in (("train", 48), ("validation", 12)):
        files[split] = tmp_path / f"{split}.csv"
        with open(files[split], "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for _ in range(n):
                label = rnd.choice(["sport", "music", "food"])
                w.writerow([f"{label} {rnd.choice(['is', 'was', 'felt'])} {label} fun", label])
    topic = tmp_path / "topic"
    adapterkit.train(adapterkit.recipe_from_dict(tiny_recipe(tiny_bert, files, topic, training={"epochs": 1})))
    pool = open_pool([base_runs["lora0"], topic])
    assert pool.runs["lora0"].model is pool.runs["topic"].model  # one PEFT model, heads of width 2 and 3
    calls = []
    handle = pool.runs["topic"].model.register_forward_hook(lambda *a: calls.append(1))
    out = pool.parallel(["lora0", "topic"], TEXTS)
    handle.remove()
    assert len(calls) == 1  # both runs' rows in one forward pass
    for name, run in (("lora0", base_runs["lora0"]), ("topic", topic)):
        assert out[name] == predict(run, TEXTS)
    alone = load_run(topic)
    group = pool.groups[pool.group_of["topic"]]
    with group.rows(["topic"] * len(TEXTS)) as forward:
        mixed = predict_logits(pool.runs["topic"].model, pool.runs["topic"].tokenizer, TEXTS, 32, forward=forward)
    assert torch.allclose(mixed[:, :3], _logits(alone), atol=1e-5, rtol=0)
    res = cli("predict", base_runs["lora0"], topic, "--text", TEXTS[0], "--text", TEXTS[1])
    assert res.code == 0, res.err
    rows = [json.loads(line) for line in res.out.splitlines()]
    assert [r["run"] for r in rows] == ["lora0", "lora0", "topic", "topic"]
    assert rows[2]["label"] in ("sport", "music", "food")
