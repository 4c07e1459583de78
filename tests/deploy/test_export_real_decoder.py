"""The case a new user hit: an ordinary SmolLM2-135M LoRA run (r=8, float32, causal LM, 49k-token vocabulary)
exported with the default check. It passes, the report says how far merged and unmerged logits are apart relative
to their scale, and counts the examples it really compared."""
import pytest
import yaml

from helpers import ROOT, shared_data, smollm2_dir


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory):
    from adapterkit.config import resolve_paths
    from adapterkit.model import load_recipe
    from adapterkit.training import train

    smollm2_dir()
    data = shared_data("webnlg")
    tmp_path = tmp_path_factory.mktemp("smollm2_lora")
    r = resolve_paths(load_recipe(ROOT / "recipes" / "smollm2-webnlg-lora-int8.yaml", [
        "backbone.quantization=none", "adapter.r=8", "adapter.alpha=16", f"data.train={data / 'train.jsonl'}",
        f"data.validation={data / 'validation.jsonl'}", "data.test=null", "data.max_train_samples=16", "data.max_eval_samples=8",
        "task.generation_metrics=[]", "training.early_stopping.metric=loss", "training.max_steps=2", "training.batch_size=8", "training.lr=2.0e-3",
        f"training.output_dir={tmp_path / 'run'}"]))
    train(r)
    return tmp_path / "run"


@pytest.mark.slow
def test_default_export_of_a_smollm2_lora_run_passes_its_check(smollm2_run, tmp_path):
    from adapterkit.deploy import export

    report = export(smollm2_run, tmp_path / "exp", requantize=False)
    check = report["merged_vs_unmerged"]
    assert check["examples"] == 8 and report["verified_on"]["examples"] == 8
    assert check["logit_scale"] > 5  # decoder logits: far larger than a classifier's
    assert check["max_abs_diff"] <= check["allowed_abs_diff"] == pytest.approx(1e-4 * check["logit_scale"])
    print(yaml.safe_dump({k: check[k] for k in ("max_abs_diff", "logit_scale", "relative_diff")}))


@pytest.mark.slow
def test_smollm2_gguf_export_keeps_the_packaged_tokenizer_and_greedy_text(smollm2_run, tmp_path):
    """The base came from a GGUF file: its tokenizer fields (llama.cpp's `smollm` pre-tokenizer included) are copied."""
    import gguf

    from adapterkit.deploy import export

    report = export(smollm2_run, tmp_path / "gguf", fmt="gguf", gguf_type="f16")
    g = report["gguf_vs_merged"]
    assert g["tokenizer_identical_ids"] == g["prompts"] == 8 and g["greedy_identical"] == 8
    fields = gguf.GGUFReader(str(tmp_path / "gguf" / "model.gguf")).fields
    assert fields["tokenizer.ggml.pre"].contents() == "smollm" and fields["llama.block_count"].contents() == 30
    print(yaml.safe_dump({"greedy_identical": g["greedy_identical"], "relative_diff": g["logits"]["relative_diff"]}))
