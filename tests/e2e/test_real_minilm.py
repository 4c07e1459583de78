"""Integration: the real all-MiniLM-L6-v2 in 8-bit, LoRA, on an SST-2 subset; export agrees with the trained run."""
import pytest

from adapterkit.config import resolve_paths
from adapterkit.model import load_recipe
from adapterkit.deploy import export
from adapterkit.training import train
from helpers import ROOT, minilm_dir, shared_data

pytestmark = pytest.mark.slow


def test_sst2_int8_lora_learns_and_exports(tmp_path):
    minilm_dir()
    sst2 = shared_data("sst2")
    recipe = load_recipe(ROOT / "recipes" / "sst2-lora-int8.yaml", [
        f"data.train={sst2 / 'train.tsv'}", f"data.validation={sst2 / 'validation.tsv'}",
        "data.max_train_samples=1200", "data.max_eval_samples=300", "training.eval_every=1000",
        f"training.output_dir={tmp_path / 'run'}"])
    final = train(resolve_paths(recipe))
    assert final["validation"]["accuracy"] >= 0.75, final
    report = export(tmp_path / "run", tmp_path / "exp")
    assert report["merged_vs_unmerged"]["max_abs_diff"] < 1e-4
    assert report["agreement_with_trained"]["prediction_agreement"] >= 0.95
