"""Position interpolation (`backbone.rope_scaling`): a decoder tuned beyond its trained context; the setting reaches
the model, the run and the merged export."""
import json

import pytest
import torch

from helpers import save_tokenizer, tiny_recipe


@pytest.fixture
def short_llama(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path / "llama16"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                 intermediate_size=64, max_position_embeddings=16, pad_token_id=0, tie_word_embeddings=True,
                                 rope_theta=5000.0)).save_pretrained(d)
    save_tokenizer(d)
    return d


@pytest.mark.slow
def test_rope_scaling_trains_beyond_the_trained_context_and_exports(short_llama, tmp_path):
    import adapterkit
    from adapterkit.deploy import export
    from adapterkit.model import load_run

    rows = [{"prompt": " ".join(f"word{j}" for j in range(12)) + f" question {i} :", "completion": f" answer {i % 3}"} for i in range(16)]
    f = tmp_path / "long.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = tiny_recipe(short_llama, {"train": f, "validation": f}, tmp_path / "run", task={"type": "causal_lm"},
                    backbone={"rope_scaling": {"rope_type": "linear", "factor": 4.0}}, data={"max_length": 64},
                    training={"max_steps": 4, "batch_size": 8})
    recipe = adapterkit.recipe_from_dict(r)
    from adapterkit.model import build

    model, _ = build(recipe, None)
    cfg = model.get_base_model().config
    assert cfg.rope_parameters["rope_type"] == "linear" and cfg.rope_parameters["factor"] == 4.0
    assert cfg.rope_parameters["rope_theta"] == 5000.0  # the model's own theta is kept
    final = adapterkit.train(recipe)
    assert torch.isfinite(torch.tensor(final["validation"]["loss"]))
    from adapterkit.data import load_eval_split
    from adapterkit.heads import HEADS

    run = load_run(tmp_path / "run")
    ds, _ = load_eval_split(run.recipe, run.tokenizer, HEADS["causal_lm"], None, "validation")
    assert max(len(x) for x in ds["input_ids"]) > 16  # trained past max_position_embeddings
    export(tmp_path / "run", tmp_path / "exp", requantize=False)
    saved = json.loads((tmp_path / "exp" / "config.json").read_text())
    params = saved.get("rope_parameters") or saved.get("rope_scaling")
    assert params["rope_type"] == "linear" and params["factor"] == 4.0
