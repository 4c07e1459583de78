"""Causal LM head (completion-only loss, perplexity, generate) and label-word classification, on the tiny Llama;
one slow test on the real SmolLM2."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from adapterkit.model import recipe_from_dict
from adapterkit.errors import DataError, RecipeError

from helpers import cli, shared_data, smollm2_dir, tiny_recipe, write_sentiment

CHATML = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
          "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def _jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _tok(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _lm_recipe(model_dir, files, out, **sections):
    r = tiny_recipe(model_dir, files, out, task={"type": "causal_lm"}, **sections)
    return recipe_from_dict(r)


def _qa_rows(n=16):
    colors = ["blue", "green", "red", "white"]
    return [{"prompt": f"question {i} : what color is item {i % 4} ?", "completion": f" {colors[i % 4]} color"} for i in range(n)]


# ---------------------------------------------------------------- completion-only loss masking

def test_prompt_completion_labels_mask_prompt_and_padding(tiny_llama, tmp_path):
    from adapterkit import data as data_mod
    from adapterkit.heads import HEADS

    rows = [{"prompt": "what color is the sky ?", "completion": " blue"},
            {"prompt": "a much longer prompt about the color of the deep sea at night ?", "completion": " dark blue green"}]
    f = _jsonl(tmp_path / "train.jsonl", rows)
    recipe = _lm_recipe(tiny_llama, {"train": f, "validation": f}, tmp_path / "run")
    tok = _tok(tiny_llama)
    _prepared = data_mod.prepare(recipe, tok, HEADS["causal_lm"])
    splits, labels = _prepared.splits, _prepared.labels
    assert labels is None
    ds = splits["train"]
    for row, ex in zip(rows, ds):
        n_prompt = len(tok(row["prompt"], add_special_tokens=False)["input_ids"])
        n_completion = len(tok(row["completion"], add_special_tokens=False)["input_ids"])
        assert ex["labels"][:n_prompt] == [-100] * n_prompt
        assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]
        assert len(ex["input_ids"]) == n_prompt + n_completion  # this tokenizer has no EOS to append
    batch = data_mod.Collator(tok)([ds[0], ds[1]])
    short = len(ds[0]["input_ids"])
    assert batch["input_ids"].shape[1] == len(ds[1]["input_ids"]) > short
    assert (batch["labels"][0, short:] == -100).all() and (batch["attention_mask"][0, short:] == 0).all()
    trained = batch["labels"] != -100
    assert trained.sum().item() == sum(len(tok(r["completion"], add_special_tokens=False)["input_ids"]) for r in rows)
    assert tok.decode(batch["labels"][1][trained[1]]) == "dark blue green"


def test_chat_rows_train_only_assistant_turns_with_template(tiny_llama, tmp_path):
    from adapterkit.data.lm import tokenize_lm
    import datasets

    tok = _tok(tiny_llama)
    tok.chat_template = CHATML
    messages = [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi friend"},
                {"role": "user", "content": "what is blue ?"}, {"role": "assistant", "content": "the sky"}]
    recipe = _lm_recipe(tiny_llama, {"train": "x.jsonl", "validation": "x.jsonl"}, tmp_path / "run", data={"max_length": 128})
    ds = tokenize_lm(datasets.Dataset.from_list([{"messages": messages}]), tok, recipe, None, "x.jsonl")
    ex = ds[0]
    assert ex["input_ids"] == tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    trained = [t for t, l in zip(ex["input_ids"], ex["labels"]) if l != -100]
    # Each assistant turn's content and its end-of-turn marker, nothing from the user turns or role headers.
    expected = tok("hi friend<|end|>", add_special_tokens=False)["input_ids"] + tok("the sky<|end|>", add_special_tokens=False)["input_ids"]
    assert trained == expected
    # data.chat_template: false falls back to a plain transcript even though the tokenizer has a template.
    plain = _lm_recipe(tiny_llama, {"train": "x.jsonl", "validation": "x.jsonl"}, tmp_path / "run", data={"max_length": 128, "chat_template": False})
    ex2 = tokenize_lm(datasets.Dataset.from_list([{"messages": messages}]), tok, plain, None, "x.jsonl")[0]
    assert tok.decode([t for t, l in zip(ex2["input_ids"], ex2["labels"]) if l != -100]) == "hi friend the sky"


def test_bad_lm_data_fails_with_one_clear_line(tiny_llama, tmp_path):
    from adapterkit import data as data_mod
    from adapterkit.heads import HEADS

    tok = _tok(tiny_llama)
    head = HEADS["causal_lm"]
    cases = [
        ([{"text": "no prompt column", "completion": "x"}], "data.prompt_column"),
        ([{"messages": [{"role": "user", "content": "hi"}]}], "no assistant message"),
        ([{"prompt": "a b c d e f g h i j k l m n o p q r s t u v w x y z a b c d e f g h", "completion": " late"}], "no completion tokens left"),
        ([{"prompt": "p", "completion": "   "}], "non-empty 'completion'"),
    ]
    for i, (rows, needle) in enumerate(cases):
        f = _jsonl(tmp_path / f"bad{i}.jsonl", rows)
        recipe = _lm_recipe(tiny_llama, {"train": f, "validation": f}, tmp_path / "run", data={"max_length": 16})
        with pytest.raises(DataError, match=needle):
            data_mod.prepare(recipe, tok, head)


# ---------------------------------------------------------------- training, perplexity, generate

@pytest.fixture(scope="module")
def lm_run(tiny_llama, tmp_path_factory):
    from adapterkit.training import train

    d = tmp_path_factory.mktemp("lm_run")
    f = _jsonl(d / "train.jsonl", _qa_rows())
    recipe = _lm_recipe(tiny_llama, {"train": f, "validation": f}, d / "run",
                        training={"max_steps": 3, "batch_size": 8, "eval_batch_size": 64, "lr": 1e-2, "log_every": 1})
    return d / "run", train(recipe), recipe


@pytest.mark.slow
def test_causal_lm_perplexity_is_exp_of_completion_token_loss(lm_run):
    from adapterkit import data as data_mod
    from adapterkit.heads import HEADS
    from adapterkit.model import load_run

    run, final, recipe = lm_run
    val = final["validation"]
    assert val["perplexity"] == pytest.approx(math.exp(val["loss"]), rel=1e-5)
    assert json.loads((run / "metrics.json").read_text())["validation"]["perplexity"] == val["perplexity"]
    # The reported loss is the mean cross-entropy over completion tokens only, recomputed here by hand from the logits.
    _loaded = load_run(run)
    model, tok, rec, labels, head_modules = _loaded.model, _loaded.tokenizer, _loaded.recipe, _loaded.labels, _loaded.head_modules
    assert head_modules == [] and not (run / "model").exists()
    ds, _ = data_mod.load_eval_file(rec, tok, HEADS["causal_lm"], labels, rec.data.validation, "data.validation")
    batch = data_mod.Collator(tok)([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = logits[:, :-1].float().log_softmax(-1)
    tgt = batch["labels"][:, 1:]
    mask = tgt != -100
    nll = -logp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)[mask]
    assert nll.mean().item() == pytest.approx(val["loss"], rel=1e-4)


def test_causal_lm_trains_lora_only_and_lm_head_stays_tied(tiny_llama, tmp_path):
    from adapterkit.model import build, trainable_parameters

    f = _jsonl(tmp_path / "t.jsonl", _qa_rows(4))
    model, head_modules = build(_lm_recipe(tiny_llama, {"train": f, "validation": f}, tmp_path / "run"), None)
    assert head_modules == []
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n for n in names)
    assert not any("lm_head" in n for n, _ in model.named_modules() if "lora" in n)
    inner = model.get_base_model()
    assert inner.lm_head.weight is inner.get_input_embeddings().weight
    assert trainable_parameters(model)[0] == sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)


@pytest.mark.slow
def test_generate_from_run_dir_is_greedy_continuation(lm_run):
    from adapterkit.model import load_run

    run, _, _ = lm_run
    prompt = "question 3 : what color is item 3 ?"
    res = cli("generate", run, "--prompt", prompt, "--max-new-tokens", "4")
    assert res.code == 0, res.err
    row = json.loads(res.out.strip().splitlines()[-1])
    assert row["prompt"] == prompt
    _loaded = load_run(run)
    model, tok = _loaded.model, _loaded.tokenizer
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        for _ in range(4):  # greedy decoding by hand
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], 1)
    expected = tok.decode(ids[0, -4:], skip_special_tokens=True)
    assert row["completion"] == expected and row["completion"].strip()


# ---------------------------------------------------------------- label words

def _lw_recipe(model_dir, files, out, words=None, **sections):
    r = tiny_recipe(model_dir, files, out, task={"type": "label_words", "label_words": words or {"pos": "good", "neg": "bad"},
                                                 "prompt_template": "review : {text} . sentiment :"}, **sections)
    return recipe_from_dict(r)


def test_label_word_scoring_picks_the_word_the_lm_prefers(tiny_llama, tmp_path):
    """Label words are chosen so the base LM's preference is known: the class whose word has the higher next-token
    log-probability after the rendered prompt must win, with right padding in a mixed-length batch."""
    from transformers import AutoModelForCausalLM

    from adapterkit import data as data_mod
    from adapterkit.heads import HEADS
    from adapterkit.data.lm import tokenize_label_words
    from adapterkit.heads.lm import label_word_ids, render_prompt
    from adapterkit.heads.modules import LabelWordsModel
    import datasets

    files = write_sentiment(tmp_path)
    tok = _tok(tiny_llama)
    lm = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    texts = ["the film was great", "a long and really quite terrible film with nothing in it at all"]
    candidates = ["good", "bad", "fine", "poor", "nice", "dull", "red", "blue"]
    cand_ids = [tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in candidates]
    probe = _lw_recipe(tiny_llama, files, tmp_path / "r")
    with torch.no_grad():
        logp = lm(**tok(render_prompt(probe, tok, texts[0]), add_special_tokens=False, return_tensors="pt")).logits[0, -1].log_softmax(-1)
    scores = logp[cand_ids]
    best, worst = candidates[int(scores.argmax())], candidates[int(scores.argmin())]
    for words, expect in (({"neg": worst, "pos": best}, "pos"), ({"neg": best, "pos": worst}, "neg")):
        recipe = _lw_recipe(tiny_llama, files, tmp_path / "r", words=words)
        labels = ["neg", "pos"]
        ids = label_word_ids(recipe, tok, labels)
        assert [tok.decode([i]) for i in ids] == [words["neg"], words["pos"]]
        ds = tokenize_label_words(datasets.Dataset.from_dict({"text": texts, "label": ["pos", "neg"]}), tok, recipe, labels, "x")
        batch = data_mod.Collator(tok)([ds[0], ds[1]])
        model = LabelWordsModel(lm, ids).eval()
        with torch.no_grad():
            out = model(**batch)
        assert HEADS["label_words"].predict(out.logits)[0].item() == labels.index(expect)
        # Each row's class scores are the LM's log-probs of the words at its own last prompt token, padding ignored.
        for row in range(2):
            n = int(batch["attention_mask"][row].sum())
            with torch.no_grad():
                ref = lm(input_ids=batch["input_ids"][row:row + 1, :n]).logits[0, -1].float().log_softmax(-1)
            torch.testing.assert_close(out.logits[row], ref[ids], rtol=1e-4, atol=1e-5)
            assert out.loss is not None


@pytest.mark.slow
def test_label_words_trains_beyond_zero_shot_and_cli_scores_both(tiny_llama, tmp_path):
    from adapterkit.training import train

    files = write_sentiment(tmp_path, n_train=64, n_val=32)
    recipe = _lw_recipe(tiny_llama, files, tmp_path / "run",
                        # 3e-2 diverged on one thread (accuracy 0.5); 2e-2 reaches 0.97-1.0 on one or two
                        training={"epochs": 10, "batch_size": 16, "lr": 2e-2, "eval_every": 100, "log_every": 4})
    final = train(recipe)
    results = {}
    for flag in ([], ["--zero-shot"]):
        res = cli("eval", tmp_path / "run", *flag)
        assert res.code == 0, res.err
        out = res.out
        results[bool(flag)] = json.loads(out[out.index("{"):])
    assert results[False]["accuracy"] == pytest.approx(final["validation"]["accuracy"])
    assert results[False]["accuracy"] > results[True]["accuracy"]
    assert results[False]["accuracy"] >= 0.9
    res = cli("predict", tmp_path / "run", "--text", "the film was lovely and lovely")
    assert res.code == 0, res.err
    assert json.loads(res.out.strip().splitlines()[-1])["label"] == "pos"


def test_label_words_recipe_errors_name_the_field(tiny_llama, tmp_path):
    from adapterkit.model import build

    files = write_sentiment(tmp_path)
    with pytest.raises(RecipeError, match="task.label_words.*missing \\['pos'\\]"):
        build(_lw_recipe(tiny_llama, files, tmp_path / "r", words={"neg": "bad"}), ["neg", "pos"])
    with pytest.raises(RecipeError, match="same token"):
        build(_lw_recipe(tiny_llama, files, tmp_path / "r", words={"neg": "good", "pos": "good"}), ["neg", "pos"])
    with pytest.raises(RecipeError, match="task.prompt_template"):
        build(recipe_from_dict(tiny_recipe(tiny_llama, files, tmp_path / "r", task={
            "type": "label_words", "label_words": {"neg": "bad", "pos": "good"}, "prompt_template": "no slot"})), ["neg", "pos"])
    with pytest.raises(RecipeError, match="label_words"):
        recipe_from_dict(tiny_recipe(tiny_llama, files, tmp_path / "r", task={"type": "label_words"}))


@pytest.mark.slow
def test_zero_shot_refused_for_heads_with_trained_weights(tiny_bert, tmp_path):
    from adapterkit.inference import eval_run
    from adapterkit.training import train

    files = write_sentiment(tmp_path, n_train=16, n_val=8)
    train(recipe_from_dict(tiny_recipe(tiny_bert, files, tmp_path / "run", training={"max_steps": 1})))
    with pytest.raises(DataError, match="--zero-shot"):
        eval_run(tmp_path / "run", zero_shot=True)


# ---------------------------------------------------------------- real SmolLM2

@pytest.mark.slow
def test_smollm2_label_words_lora_few_steps(tmp_path):
    """SmolLM2-135M-Instruct from its GGUF file with the shipped recipe: a few LoRA steps, zero-shot and tuned scores
    from the same eval command, and generate consistent with the label-word scores."""
    smollm2_dir()
    sst2 = shared_data("sst2")
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "smollm2-sst2-label-words-lora.yaml"
    run = tmp_path / "run"
    sets = [f"data.train={sst2 / 'train.tsv'}", f"data.validation={sst2 / 'validation.tsv'}", "data.max_train_samples=16",
            "data.max_eval_samples=16", "training.max_steps=2", "training.batch_size=8"]
    res = cli("train", recipe, "-o", run, *[a for s in sets for a in ("--set", s)])
    assert res.code == 0, res.err
    scores = {}
    for flag in ([], ["--zero-shot"]):
        res = cli("eval", run, *flag)
        assert res.code == 0, res.err
        out = res.out
        scores[bool(flag)] = json.loads(out[out.index("{"):])
    for s in scores.values():
        assert 0.0 <= s["accuracy"] <= 1.0 and s["loss"] > 0
    assert scores[False]["loss"] != scores[True]["loss"]  # the adapter changed the scores
    assert scores[False]["accuracy"] == pytest.approx(json.loads((run / "metrics.json").read_text())["validation"]["accuracy"])
    text = "a wonderful, moving film."
    res = cli("predict", run, "--text", text)
    assert res.code == 0, res.err
    label = json.loads(res.out.strip().splitlines()[-1])["label"]
    res = cli("generate", run, "--prompt", text, "--max-new-tokens", "2")
    assert res.code == 0, res.err
    completion = json.loads(res.out.strip().splitlines()[-1])["completion"]
    assert completion.strip()
    words = {"negative": "0", "positive": "1"}
    first = completion.strip().split()[0].strip(".")
    if first in words:  # the vocabulary-wide argmax is a label word, so it must be the best-scored label word too
        assert words[first] == label


PLUGIN_HEAD = '''
from dataclasses import replace

from adapterkit.heads import HEADS, register_head

# A new kind of head, registered from its own module alone: an LM head under another name.
register_head(replace(HEADS["causal_lm"], name="plugin_lm"))
'''


@pytest.mark.slow
def test_a_plugin_head_kind_gets_every_capability_from_its_record(tiny_llama, tmp_path, monkeypatch):
    """Capabilities live on the Head record: a plugin head with lm_training and generates packs, trains with the LM
    loss, generates and passes the GGUF export's check, with no edit outside its own module."""
    import sys

    from adapterkit.config import resolve_paths
    from adapterkit.deploy import gguf_export
    from adapterkit.training import train

    (tmp_path / "plugin_lm_head.py").write_text(PLUGIN_HEAD)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    f = _jsonl(tmp_path / "train.jsonl", _qa_rows(16))
    r = tiny_recipe(tiny_llama, {"train": f, "validation": f}, tmp_path / "run",
                    task={"type": "plugin_lm", "plugin": "plugin_lm_head"}, training={"epochs": 1, "packing": True})
    try:
        final = train(resolve_paths(recipe_from_dict(r)))
        assert "perplexity" in final["validation"]
        gguf_export.check_supported(recipe_from_dict(r), "f16")  # GGUF export accepts it like causal_lm
        out = tmp_path / "gen.jsonl"
        res = cli("generate", tmp_path / "run", "--prompt", "question 1 : what color is item 1 ?", "--max-new-tokens", "3",
                  "--out", out)
        assert res.code == 0, res.err
        assert len(out.read_text().splitlines()) == 1
    finally:
        from adapterkit.heads import HEADS

        HEADS.pop("plugin_lm", None)
        sys.modules.pop("plugin_lm_head", None)
