"""The case a new user hit: an ordinary SmolLM2-135M LoRA run (r=8, float32, causal LM, 49k-token vocabulary)
exported with the default check. It passes, the report says how far merged and unmerged logits are apart relative
to their scale, and counts the examples it really compared."""
import pytest
import yaml

from conftest import ROOT, shared_data, smollm2_dir


@pytest.mark.slow
def test_default_export_of_a_smollm2_lora_run_passes_its_check(tmp_path):
    from adapterkit.config import resolve_paths
    from adapterkit.deploy import export
    from adapterkit.model import load_recipe
    from adapterkit.training import train

    smollm2_dir()
    data = shared_data("webnlg")
    r = resolve_paths(load_recipe(ROOT / "recipes" / "smollm2-webnlg-lora-int8.yaml", [
        "backbone.quantization=none", "adapter.r=8", "adapter.alpha=16", f"data.train={data / 'train.jsonl'}",
        f"data.validation={data / 'validation.jsonl'}", "data.test=null", "data.max_train_samples=16", "data.max_eval_samples=10",
        "task.generation_metrics=[]", "training.early_stopping.metric=loss", "training.max_steps=2", "training.batch_size=8", "training.lr=2.0e-3",
        f"training.output_dir={tmp_path / 'run'}"]))
    train(r)
    report = export(tmp_path / "run", tmp_path / "exp", requantize=False)
    check = report["merged_vs_unmerged"]
    assert check["examples"] == 10 and report["verified_on"]["examples"] == 10
    assert check["logit_scale"] > 5  # decoder logits: far larger than a classifier's
    assert check["max_abs_diff"] <= check["allowed_abs_diff"] == pytest.approx(1e-4 * check["logit_scale"])
    print(yaml.safe_dump({k: check[k] for k in ("max_abs_diff", "logit_scale", "relative_diff")}))
