"""The pipeline examples in examples/pipelines/ run here on tiny models (each also runs standalone on the packaged MiniLM)."""
import importlib.util
import json

import pytest

from helpers import ROOT, tiny_recipe, write_sentiment

EXAMPLES = ROOT / "examples" / "pipelines"


def _example(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_build_model_in_five_lines(tiny_bert):
    src = (EXAMPLES / "build_model.py").read_text()
    five = src.split("# --- the five lines ---\n")[1].split("    # ----")[0]
    assert len([l for l in five.splitlines() if l.strip()]) == 5
    out = _example("build_model").main(tiny_bert)
    assert out["model"].startswith("PeftModel")
    assert out["logits_shape"] == [1, 2]
    assert 0 < out["trainable_params"] < out["total_params"] / 2


def test_b_bottleneck_config_with_get_peft_model(tiny_bert):
    import adapterkit

    if not hasattr(adapterkit, "BottleneckConfig"):
        pytest.skip("adapterkit.BottleneckConfig is not exported yet (issue 3: bottleneck adapters)")
    out = _example("bottleneck_peft").main(tiny_bert, steps=20)
    assert out["peft_type"].upper().endswith("BOTTLENECK")
    assert out["trainable_params"] > 0
    assert out["loss_after"] < out["loss_before"], out
    assert out["up_projection_norm"] > 0  # the adapters trained (they start at exactly zero)
    assert out["reload_max_abs_diff"] < 1e-5  # save_pretrained -> PeftModel.from_pretrained round trip


def test_c_transformers_trainer(tiny_bert, tmp_path):
    files = write_sentiment(tmp_path, n_train=96, n_val=8)
    out = _example("hf_trainer").main(tiny_bert, files["train"], max_steps=24, output_dir=str(tmp_path / "hf"))
    assert out["steps"] == 24
    assert out["frozen_unchanged"]  # Trainer only moved the adapter and head
    assert out["mean_last_5"] < out["mean_first_5"] - 0.05, out


@pytest.mark.slow
def test_d_load_export_with_plain_transformers(tiny_bert, tmp_path):
    import adapterkit
    from adapterkit.config import resolve_paths
    from adapterkit.model import recipe_from_dict
    from adapterkit.inference import predict

    files = write_sentiment(tmp_path, n_train=32, n_val=16)
    run = tmp_path / "run"
    adapterkit.train(resolve_paths(recipe_from_dict(tiny_recipe(tiny_bert, files, run, training={"epochs": 1}))))
    adapterkit.export(run, tmp_path / "export")
    texts = ["the film was great and really great", "the film was awful", "the film was sad and broken", "the film was superb"]
    rows = _example("load_export").main(tmp_path / "export", texts)
    assert [r["label"] for r in rows] == [r["label"] for r in predict(run, texts)]
    assert all(0.5 <= r["score"] <= 1.0 for r in rows)
    report = json.loads((tmp_path / "export" / "export_report.json").read_text())
    assert report["loads_with"].startswith("transformers.")
