"""Issue 5: verified exports (merged and adapter), adapter merging, scale sweeps. Tiny random models, except
the slow test on the real MiniLM."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from adapterkit.adapters import METHODS
from adapterkit.deploy import export
from adapterkit.model import load_run
from adapterkit.training import train
from adapterkit.inference import verify
from helpers import (ROOT, as_recipe, cli, hub_repo, minilm_dir, restamp, run_loads_with, shared_data, tiny_recipe, write_ner,
                     write_sentiment)

MERGEABLE = sorted(n for n, m in METHODS.items() if m.mergeable and not m.trains_base)  # adapters that merge


def _recipe(model_dir, files, out, adapter=None, **sections):
    """A one-epoch tiny recipe; `adapter`, where given, set whole (another method than LoRA)."""
    sections.setdefault("training", {}).setdefault("epochs", 1)
    return as_recipe(tiny_recipe(model_dir, files, out, replace=None if adapter is None else {"adapter": adapter}, **sections))


def _train(model_dir, files, out, adapter=None, **sections):
    r = _recipe(model_dir, files, out, adapter, **sections)
    train(r)
    return out


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory):
    """Two tiny LoRA runs (seeds 0 and 1) on the same data, shared by the tests that only read them."""
    d = tmp_path_factory.mktemp("issue5_runs")
    files = write_sentiment(d)
    return {"files": files,
            "a": _train(tiny_bert, files, d / "a", training={"lr": 5e-2, "seed": 0}),
            "b": _train(tiny_bert, files, d / "b", training={"lr": 5e-2, "seed": 1})}


def _adapter_for(method):
    if method in ("lora", "dora", "rslora"):
        return {"method": method, "r": 4, "alpha": 8, "dropout": 0.0}
    return {"method": method}


def _probe(model, tokenizer, recipe, labels, n=32):
    from adapterkit.heads import HEADS

    loader = verify.eval_loader(recipe, tokenizer, labels, "validation", n).loader
    return torch.cat(verify.run_pass(model, loader, HEADS[recipe.task.type], probe=n).probe_logits)


@pytest.mark.slow
@pytest.mark.parametrize("method", MERGEABLE)
def test_merged_matches_unmerged_in_float32(method, tiny_bert, runs, tmp_path):
    """Acceptance 1: per mergeable method, merged vs unmerged full-precision logits within 1e-4."""
    assert {"lora", "dora", "rslora", "ia3"} <= set(MERGEABLE)
    run = runs["a"] if method == "lora" else \
        _train(tiny_bert, runs["files"], tmp_path / "run", adapter=_adapter_for(method),
               training={"lr": 5e-2 if method == "dora" else 2e-2})
    if method == "ia3":  # eight tiny steps barely move IA3's vectors; push them off 1 so merging has something to get wrong
        from safetensors.torch import save_file

        f = run / "adapter" / "adapter_model.safetensors"
        g = torch.Generator().manual_seed(0)
        save_file({k: v + torch.randn(v.shape, generator=g) for k, v in load_file(f).items()}, str(f))
        restamp(run)
    _loaded = load_run(run, quantization="none")
    model, tok, recipe, labels = _loaded.model, _loaded.tokenizer, _loaded.recipe, _loaded.labels
    unmerged = _probe(model, tok, recipe, labels)
    with model.disable_adapter():
        base = _probe(model, tok, recipe, labels)
    effect = (unmerged - base).abs().max()
    assert effect > 2e-4, "the adapter must change the logits for this check to mean anything"
    merged = model.merge_and_unload()
    assert not any("lora_" in n or "ia3_" in n for n, _ in merged.named_parameters())
    diff = (_probe(merged, tok, recipe, labels) - unmerged).abs().max()
    assert diff < 1e-4 and diff < effect / 10
    # The export reports the same check, and the plain-transformers reload agrees with the trained run.
    report = export(run, tmp_path / "exp", requantize=False)
    assert report["merged_vs_unmerged"]["max_abs_diff"] < 1e-4
    assert report["verification"]["exported"]["prediction_agreement"] == 1.0


@pytest.mark.slow
def test_export_report_and_int8_requantization(tiny_bert, sentiment_files, tmp_path):
    run = _train(tiny_bert, sentiment_files, tmp_path / "run", backbone={"quantization": "int8"}, training={"lr": 2e-2})
    report = export(run, tmp_path / "exp", dtype="bfloat16")
    on_disk = json.loads((tmp_path / "exp" / "export_report.json").read_text())
    assert on_disk["verification"] == json.loads(json.dumps(report["verification"]))
    v = report["verification"]
    trained_acc = json.loads((run / "metrics.json").read_text())["validation"]["accuracy"]
    assert v["metric"] == "accuracy" and v["trained"]["metrics"]["accuracy"] == pytest.approx(trained_acc)
    assert v["trained"]["quantization"] == "int8"
    for name in ("exported", "exported_int8"):
        assert 0.0 <= v[name]["prediction_agreement"] <= 1.0
        assert v[name]["delta_points"] == pytest.approx((v[name]["metrics"]["accuracy"] - trained_acc) * 100, abs=1e-3)
    weights = report["files"]["model.safetensors"]
    assert set(weights["dtypes"]) == {"BF16"} and weights["dtypes"]["BF16"] > 10  # every tensor bf16
    assert weights["bytes"] == (tmp_path / "exp" / "model.safetensors").stat().st_size
    assert report["merged_vs_unmerged"]["precision"] == "float32" and report["merged_vs_unmerged"]["max_abs_diff"] < 1e-4


@pytest.mark.slow
def test_export_refuses_when_over_tolerance_and_writes_nothing(runs, tmp_path):
    from adapterkit.deploy import ExportError

    run = runs["a"]
    with pytest.raises(ExportError, match="differ by .* > tolerance 1e-30"):
        export(run, tmp_path / "exp", tolerance=1e-30)
    assert not (tmp_path / "exp").exists() and not (tmp_path / "exp.tmp").exists()


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["wrong_scale", "missing_layer"])
def test_a_wrong_merge_fails_the_default_check(fault, tiny_bert, runs, tmp_path, monkeypatch):
    """The relative tolerance still catches a merge that is wrong: every LoRA delta at 1.5x its scale, or one
    layer's delta left out (adapter weights pushed off their tiny trained values so every layer matters)."""
    import shutil

    from peft.tuners.lora import LoraLayer
    from peft.tuners.tuners_utils import BaseTuner
    from safetensors.torch import save_file

    from adapterkit.deploy import ExportError

    run = tmp_path / "run"
    shutil.copytree(runs["a"], run)
    f = run / "adapter" / "adapter_model.safetensors"
    g = torch.Generator().manual_seed(0)
    save_file({k: v + 0.2 * torch.randn(v.shape, generator=g) for k, v in load_file(f).items()}, str(f))
    restamp(run)
    ok = export(run, tmp_path / "ok", requantize=False)["merged_vs_unmerged"]  # the honest merge passes by default
    assert ok["max_abs_diff"] <= ok["allowed_abs_diff"] and ok["examples"] == 32  # the validation split has 32
    real = BaseTuner.merge_and_unload

    def faulty(self, *a, **k):
        layers = [m for m in self.modules() if isinstance(m, LoraLayer)]
        if fault == "wrong_scale":
            for m in layers:
                m.scaling = {n: s * 1.5 for n, s in m.scaling.items()}
        else:
            layers[0].lora_B["default"].weight.data.zero_()
        return real(self, *a, **k)

    monkeypatch.setattr(BaseTuner, "merge_and_unload", faulty)
    with pytest.raises(ExportError, match=r"merged and unmerged logits differ by .* of the largest logit .* > tolerance 0.0001"):
        export(run, tmp_path / "bad", requantize=False)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("method", [n for n in ("prompt_tuning", "prefix_tuning", "bottleneck") if n in METHODS] or ["none"])
def test_merged_refused_for_unmergeable_methods(method, tiny_bert, sentiment_files, tmp_path):
    if method == "none":
        pytest.skip("no unmergeable adapter method is registered")
    from adapterkit.config import save_recipe

    run = tmp_path / "run"
    run.mkdir()
    save_recipe(_recipe(tiny_bert, sentiment_files, run, adapter={"method": method}), run / "recipe.yaml")
    res = cli("export", run, "--out", tmp_path / "exp")
    err = res.err.strip()
    assert res.code == 2 and len(err.splitlines()) == 1
    assert method in err and "--format adapter" in err
    assert not (tmp_path / "exp").exists()


@pytest.mark.slow
def test_adapter_export_round_trips_through_plain_peft(runs, tmp_path):
    run = runs["a"]
    report = export(run, tmp_path / "exp", fmt="adapter")
    assert report["reloaded_vs_run"]["max_abs_diff"] < 1e-5
    assert report["verification"]["exported"]["prediction_agreement"] == 1.0
    # the string to paste names the export (not a temporary folder) and the label names
    assert str((tmp_path / "exp").resolve()) in report["loads_with"] and "id2label={0: 'neg', 1: 'pos'}" in report["loads_with"]
    assert run_loads_with(report["loads_with"], tmp_path) == "PeftModelForSequenceClassification"
    texts = ["the film was great and great", "the film was awful", "the film was fine"]
    _loaded = load_run(run, quantization="none")
    model, tok = _loaded.model, _loaded.tokenizer
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = model(**enc).logits
    # A process that never imports adapterkit: transformers + peft only.
    code = (
        "import sys, json, torch\n"
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
        "from peft import PeftModel\n"
        "d, base = sys.argv[1], sys.argv[2]\n"
        "m = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)\n"
        "m = PeftModel.from_pretrained(m, d).eval()\n"
        "tok = AutoTokenizer.from_pretrained(d)\n"
        "enc = tok(json.loads(sys.argv[3]), padding=True, return_tensors='pt')\n"
        "with torch.no_grad(): print(json.dumps(m(**enc).logits.tolist()))\n"
        "assert 'adapterkit' not in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "exp"), report["base"], json.dumps(texts)],
                         capture_output=True, text=True, timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert res.returncode == 0, res.stderr[-2000:]
    theirs = torch.tensor(json.loads(res.stdout.strip().splitlines()[-1]))
    assert (theirs - ours).abs().max() < 1e-5
    # The head travelled inside the adapter (modules_to_save), not beside it.
    cfg = json.loads((tmp_path / "exp" / "adapter_config.json").read_text())
    assert "classifier" in cfg["modules_to_save"]
    assert not (tmp_path / "exp" / "head.safetensors").exists()


@pytest.mark.slow
def test_merge_linear_gives_a_run_that_evaluates(runs, tmp_path):
    from adapterkit.inference import eval_run, predict
    from adapterkit.interpolation import merge

    a, b = runs["a"], runs["b"]
    info = merge([a, b], [0.5, 0.5], tmp_path / "m", method="linear")
    m = tmp_path / "m"
    assert info["validation"]["accuracy"] == pytest.approx(eval_run(m)["accuracy"])
    assert json.loads((m / "metrics.json").read_text())["validation"] == info["validation"]
    ha, hb, hm = (load_file(x / "head.safetensors") for x in (a, b, m))
    assert set(hm) == set(ha)
    for k in hm:  # heads averaged with the adapter weights
        assert torch.allclose(hm[k], 0.5 * ha[k] + 0.5 * hb[k], atol=1e-6)
    assert not torch.equal(ha["classifier.weight"], hb["classifier.weight"])
    assert {r["label"] for r in predict(m, ["the film was great"])} <= {"pos", "neg"}
    report = export(m, tmp_path / "exp", requantize=False)  # usable by export too
    assert report["merged_vs_unmerged"]["max_abs_diff"] < 1e-4


@pytest.mark.slow
def test_merge_cat_is_the_exact_weighted_sum_of_updates(tiny_bert, runs, tmp_path):
    """`cat` keeps both factor sets, so the merged update is exactly w_a*dW_a + w_b*dW_b (linear is PEFT's approximation)."""
    from adapterkit.interpolation import merge

    a, b = runs["a"], runs["b"]
    merge([a, b], [0.7, 0.3], tmp_path / "m", method="cat", evaluate=False)
    assert json.loads((tmp_path / "m" / "adapter" / "adapter_config.json").read_text())["r"] == 8

    def delta(run):
        model = load_run(run, quantization="none").model
        w = {n: p.detach().clone() for n, p in model.merge_and_unload().named_parameters() if n.endswith("query.weight")}
        return w

    base = __import__("transformers").AutoModel.from_pretrained(tiny_bert)
    w0 = {f"bert.{n}": p for n, p in base.named_parameters() if n.endswith("query.weight")}
    wa, wb, wm = delta(a), delta(b), delta(tmp_path / "m")
    assert set(wm) == set(w0) and len(wm) == 2
    for k in wm:
        expected = w0[k] + 0.7 * (wa[k] - w0[k]) + 0.3 * (wb[k] - w0[k])
        assert (wm[k] - expected).abs().max() < 1e-5
        assert (wa[k] - w0[k]).abs().max() > 1e-3


@pytest.mark.slow
def test_merge_rejects_bad_input(runs, tmp_path):
    from adapterkit.interpolation import MergeError, merge

    a, b = runs["a"], runs["b"]
    with pytest.raises(MergeError, match="--method"):
        merge([a, b], None, tmp_path / "m", method="average")
    with pytest.raises(MergeError, match="--weights: 3 weights for 2 runs"):
        merge([a, b], [1, 1, 1], tmp_path / "m")
    with pytest.raises(MergeError, match="not a finished adapterkit run"):
        merge([a, tmp_path], None, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def _red_markers(png) -> int:
    """Count the plot's pure-red point markers as separate runs of columns that contain red pixels."""
    from PIL import Image

    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    red = (img[..., 0] > 200) & (img[..., 1] < 60) & (img[..., 2] < 60)
    cols = red.any(0)
    return int(np.sum(cols[1:] & ~cols[:-1]) + cols[0])


@pytest.mark.slow
def test_sweep_table_plot_and_scale_zero_is_the_base_model(tiny_bert, runs, tmp_path):
    from PIL import Image
    from transformers import AutoModelForSequenceClassification

    from adapterkit.heads import HEADS
    from adapterkit.inference import eval_run
    from adapterkit.interpolation import sweep

    run = runs["a"]
    scales = [0, 0.25, 0.5, 1, 1.25]
    result = sweep(run, scales, tmp_path / "sw")
    pts = json.loads((tmp_path / "sw" / "sweep.json").read_text())["points"]
    assert [p["scale"] for p in pts] == scales
    table = (tmp_path / "sw" / "sweep.md").read_text().splitlines()
    assert sum(1 for l in table if l.startswith("| ") and l[2].isdigit()) == len(scales)
    png = tmp_path / "sw" / "sweep.png"
    img = Image.open(png)
    img.load()
    assert img.size == (500, 350)
    assert json.loads(img.text["Description"])["scale"] == scales
    assert _red_markers(png) == len(scales)
    # Scale 1 is the trained run.
    assert pts[3]["loss"] == pytest.approx(eval_run(run)["loss"], abs=1e-5)
    # Scale 0 equals the base checkpoint with the trained head, built without PEFT.
    _loaded = load_run(run)
    model, tok, recipe, labels = _loaded.model, _loaded.tokenizer, _loaded.recipe, _loaded.labels
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2).eval()
    assert not base.load_state_dict(load_file(run / "head.safetensors"), strict=False).unexpected_keys
    loader = verify.eval_loader(recipe, tok, labels).loader
    ref = verify.run_pass(base, loader, HEADS["sequence_classification"]).metrics
    assert pts[0]["loss"] == pytest.approx(ref["loss"], abs=1e-6) and pts[0]["accuracy"] == ref["accuracy"]
    assert abs(pts[0]["loss"] - pts[3]["loss"]) > 1e-3
    assert result["metric"] == "accuracy"


def test_sweep_rejects_bad_scales():
    from adapterkit.interpolation import SweepError, parse_scales

    assert parse_scales("0, 0.5,1") == [0.0, 0.5, 1.0]
    with pytest.raises(SweepError, match="--scales"):
        parse_scales("0,half,1")


@pytest.mark.slow
def test_real_minilm_int8_recipe_learns_and_its_export_loads_without_adapterkit(tmp_path):
    """The shipped SST-2 recipe on the real int8 all-MiniLM-L6-v2 (1,200 examples) learns, and its merged export
    agrees with the trained run and loads with plain transformers; its adapter export names the Hub id."""
    from adapterkit.config import resolve_paths
    from adapterkit.model import load_recipe

    minilm_dir()
    sst2 = shared_data("sst2")
    recipe = load_recipe(ROOT / "recipes" / "sst2-lora-int8.yaml", [
        f"data.train={sst2 / 'train.tsv'}", f"data.validation={sst2 / 'validation.tsv'}", "data.test=null",
        "data.max_train_samples=1200", "data.max_eval_samples=300", "training.eval_every=1000",
        f"training.output_dir={tmp_path / 'run'}"])
    final = train(resolve_paths(recipe))
    assert final["validation"]["accuracy"] >= 0.75, final
    report = export(tmp_path / "run", tmp_path / "exp")
    v = report["verification"]
    assert report["merged_vs_unmerged"]["max_abs_diff"] < 1e-4
    assert v["exported"]["prediction_agreement"] >= 0.95 and v["exported_int8"]["prediction_agreement"] > 0.9
    code = (
        "import sys, json, torch\n"
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
        "m = AutoModelForSequenceClassification.from_pretrained(sys.argv[1]).eval()\n"
        "tok = AutoTokenizer.from_pretrained(sys.argv[1])\n"
        "enc = tok(['a gorgeous, witty film', 'a dull, lifeless mess'], padding=True, return_tensors='pt')\n"
        "with torch.no_grad(): print(json.dumps(m(**enc).logits.argmax(-1).tolist()))\n"
        "assert 'adapterkit' not in sys.modules\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "exp")], capture_output=True, text=True, timeout=120,
                         env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == [1, 0]
    assert run_loads_with(report["loads_with"], tmp_path) == "BertForSequenceClassification"
    # The adapter export names the model's Hub id, not the package's folder: it loads wherever that id resolves
    # (here a Hub cache laid out from the package's own files).
    adapter = export(tmp_path / "run", tmp_path / "adapter", fmt="adapter")
    assert adapter["base"] == "sentence-transformers/all-MiniLM-L6-v2"
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == adapter["base"]
    hub_repo(tmp_path / "hf", adapter["base"], {p.name: p for p in minilm_dir().iterdir() if p.is_file()})
    assert run_loads_with(adapter["loads_with"], tmp_path, env={"HF_HOME": str(tmp_path / "hf")}) == (
        "PeftModelForSequenceClassification")


_NO_ADAPTERKIT = "assert 'adapterkit' not in sys.modules\n"


def _plain_python(code: str, *args) -> str:
    res = subprocess.run([sys.executable, "-c", code + _NO_ADAPTERKIT, *map(str, args)], capture_output=True, text=True,
                         timeout=180, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_token_classification_export_loads_with_auto_class(tiny_bert, tmp_path):
    files = write_ner(tmp_path, n_train=48, n_val=16)
    run = _train(tiny_bert, files, tmp_path / "ner", task={"type": "token_classification"}, training={"lr": 1e-2})
    report = export(run, tmp_path / "exp", requantize=False)
    exp = str((tmp_path / "exp").resolve())
    assert report["loads_with"] == f"transformers.AutoModelForTokenClassification.from_pretrained({exp!r})"
    assert run_loads_with(report["loads_with"], tmp_path) == "BertForTokenClassification"
    assert report["merged_vs_unmerged"]["max_abs_diff"] < 1e-4
    assert report["verification"]["exported"]["prediction_agreement"] == 1.0
    assert "f1" in report["verification"]["exported"]["metrics"]
    code = ("import sys, json, torch\n"
            "from transformers import AutoModelForTokenClassification, AutoTokenizer\n"
            "m = AutoModelForTokenClassification.from_pretrained(sys.argv[1]).eval()\n"
            "tok = AutoTokenizer.from_pretrained(sys.argv[1])\n"
            "enc = tok(['john went to paris city'], return_tensors='pt')\n"
            "with torch.no_grad(): print(json.dumps([m.config.id2label[i] for i in m(**enc).logits.argmax(-1)[0].tolist()]))\n")
    tags = json.loads(_plain_python(code, tmp_path / "exp"))
    _loaded = load_run(run, quantization="none")
    model, tok = _loaded.model, _loaded.tokenizer
    with torch.no_grad():
        ours = model(**tok(["john went to paris city"], return_tensors="pt")).logits.argmax(-1)[0].tolist()
    labels = json.loads((run / "labels.json").read_text())["labels"]
    assert tags == [labels[i] for i in ours]


@pytest.mark.slow
def test_causal_lm_export_loads_with_auto_class_and_generates(tiny_llama, tmp_path):
    rows = [{"prompt": f"question {i} : what color is item {i % 4} ?", "completion": f" {['blue', 'red'][i % 2]} color"}
            for i in range(16)]
    f = tmp_path / "qa.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = _train(tiny_llama, {"train": f, "validation": f}, tmp_path / "lm", task={"type": "causal_lm"},
                 training={"max_steps": 4, "lr": 1e-2})
    report = export(run, tmp_path / "exp", requantize=False)
    exp = str((tmp_path / "exp").resolve())
    assert report["loads_with"] == f"transformers.AutoModelForCausalLM.from_pretrained({exp!r})"
    assert run_loads_with(report["loads_with"], tmp_path) == "LlamaForCausalLM"
    assert report["merged_vs_unmerged"]["max_abs_diff"] < 1e-4
    assert "perplexity" in report["verification"]["exported"]["metrics"]
    code = ("import sys, json, torch\n"
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
            "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()\n"
            "tok = AutoTokenizer.from_pretrained(sys.argv[1])\n"
            "enc = tok(['question 3 : what color is item 3 ?'], return_tensors='pt')\n"
            "enc.pop('token_type_ids', None)\n"
            "out = m.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)\n"
            "print(json.dumps(out[0, enc['input_ids'].shape[1]:].tolist()))\n")
    generated = json.loads(_plain_python(code, tmp_path / "exp"))
    assert len(generated) == 6
    _loaded = load_run(run, quantization="none")
    model, tok = _loaded.model, _loaded.tokenizer
    enc = tok(["question 3 : what color is item 3 ?"], return_tensors="pt")
    enc.pop("token_type_ids", None)  # the tiny Llama borrows a BERT tokenizer
    ours = model.generate(**enc, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    assert generated == ours[0, enc["input_ids"].shape[1]:].tolist()


@pytest.mark.slow
def test_cli_sweep_and_merge(runs, tmp_path):
    res = cli("sweep", runs["a"], "--scales", "0,1", "--out", tmp_path / "sw", "--max-examples", "16")
    assert res.code == 0, res.err
    out = res.out
    assert "| 0 |" in out and "| 1 |" in out and len(json.loads((tmp_path / "sw" / "sweep.json").read_text())["points"]) == 2
    for args, needle in ((["merge", str(runs["a"]), str(runs["b"]), "--out", str(tmp_path / "m"), "--weights", "half,half"], "--weights"),
                         (["sweep", str(runs["a"]), "--scales", "0,x"], "--scales"),
                         (["merge", str(runs["a"]), "--out", str(tmp_path / "m")], "at least two")):
        res = cli(*args)
        err = res.err.strip()
        assert res.code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_export_scores_the_trained_run_as_training_did(tiny_bert, tmp_path):
    """The export's `verification.trained` re-scores the run's own (int8, bf16-autocast) model on validation the way
    training's evaluation did (its batches, its autocast): the same numbers as metrics.json."""
    files = write_sentiment(tmp_path, n_train=64, n_val=48)
    run = _train(tiny_bert, files, tmp_path / "run", training={"lr": 2e-2, "eval_batch_size": 5, "mixed_precision": "auto"},
                 backbone={"path": str(tiny_bert), "quantization": "int8"})
    report = export(run, tmp_path / "exp", requantize=False)
    saved = json.loads((run / "metrics.json").read_text())["validation"]
    trained = report["verification"]["trained"]["metrics"]
    assert trained["accuracy"] == saved["accuracy"] and trained["loss"] == pytest.approx(saved["loss"], abs=1e-6)
