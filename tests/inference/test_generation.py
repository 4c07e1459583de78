"""Generation as a task: generated-text metrics (checked against sacrebleu itself), batched generation equal to one
prompt at a time, metrics in metrics.json / the report / the tracker, `generate --file`, zero-shot generation
metrics, and the same greedy text from a run and from its merged export."""
import json
from pathlib import Path

import pytest
import torch

from helpers import ROOT, cli, shared_data, tiny_recipe


def test_bleu_chrf_rouge_exact_match_on_a_hand_made_case():
    import sacrebleu

    from adapterkit import metrics

    preds = ["the cat sat on the mat", "a dog runs in the park", "hello"]
    refs = [["the cat sat on the mat", "a cat sat on a mat"], ["the dog runs in the park"], ["hello there", "hello"]]
    got = metrics.compute(("bleu", "chrf", "rouge", "exact_match"), preds, refs)
    streams = [[r[0] for r in refs], [r[1] if len(r) > 1 else None for r in refs]]
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, streams).score, abs=1e-5)
    assert got["chrf"] == pytest.approx(sacrebleu.corpus_chrf(preds, streams).score, abs=1e-5)
    assert got["exact_match"] == pytest.approx(2 / 3, abs=1e-6)
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    best = [max(scorer.score(r, p)["rouge1"].fmeasure for r in rs) for p, rs in zip(preds, refs)]
    assert got["rouge1"] == pytest.approx(sum(best) / 3, abs=1e-6)
    assert metrics.compute(("bleu",), ["x y z"], [["a b c"]])["bleu"] == 0.0


def test_batched_generation_equals_one_prompt_at_a_time(tiny_llama):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adapterkit.heads.lm import GenerationSettings
    from adapterkit.model.generation import generate_batch

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in
               ["the film was", "a long prompt about the weather in paris on a rainy day", "hi", "what color is item 3 ?"]]
    settings = GenerationSettings(max_new_tokens=8, batch_size=4)
    batched = generate_batch(model, tok, prompts, settings)
    alone = [generate_batch(model, tok, [p], settings.model_copy(update={"batch_size": 1}))[0] for p in prompts]
    assert batched == alone and all(isinstance(t, str) for t in batched)
    with_stop = generate_batch(model, tok, prompts[:1], settings.model_copy(update={"stop": [batched[0][2:4]]})) if len(batched[0]) > 4 else None
    if with_stop is not None:
        assert with_stop[0] == batched[0].split(batched[0][2:4])[0]


def test_continuous_batching_gives_generates_greedy_tokens(tiny_llama):
    """More prompts than rows, eos on some rows early: each prompt's tokens equal transformers' generate on its batch."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adapterkit.heads.lm import GenerationSettings
    from adapterkit.model import continuous
    from adapterkit.model.generation import generate_batch

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    torch.manual_seed(1)
    prompts = [torch.randint(5, 30000, (n,)).tolist() for n in (3, 9, 1, 14, 6, 2, 11, 5, 7)]
    plain = []
    for p in prompts:  # one prompt at a time: no padding, transformers' own loop
        g = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long), max_new_tokens=12,
                           do_sample=False, pad_token_id=0, eos_token_id=None)
        plain.append(g[0, len(p):].tolist())
    # An eos id that some greedy continuations produce early, so rows finish at different steps and are refilled.
    eos = plain[1][4]
    expect = [r[: r.index(eos) + 1] if eos in r else r for r in plain]
    settings = GenerationSettings(max_new_tokens=12, batch_size=3)
    assert continuous.supported(model, settings)
    got = continuous.greedy(model, prompts, 3, 12, pad=0, eos=eos)
    assert got == expect
    assert any(len(r) < 12 for r in got) and any(len(r) == 12 for r in got)  # both ways of finishing happened
    tok.eos_token_id = eos  # the same through generate_batch: decoded text
    texts = generate_batch(model, tok, prompts, settings)
    assert texts == [tok.decode(r, skip_special_tokens=True) for r in expect]
    # Prompts sharing their first tokens (a chat template's system turn): that prefix runs once, the tokens stay equal.
    shared = [prompts[3][:6] + p for p in prompts]
    assert continuous._shared_prefix(model, shared) is not None
    alone = [model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long), max_new_tokens=12,
                            do_sample=False, pad_token_id=0, eos_token_id=None)[0, len(p):].tolist() for p in shared]
    assert continuous.greedy(model, shared, 4, 12, pad=0, eos=None) == alone
    assert continuous.greedy(model, [], 4, 12, pad=0, eos=None) == []
    assert not continuous.supported(model, settings.model_copy(update={"num_beams": 2}))
    assert not continuous.supported(model, settings.model_copy(update={"repetition_penalty": 1.2}))


def _rows(n=16):
    colors = ["blue", "green", "red", "white"]
    return [{"prompt": f"what color is item {i % 4} ?", "completion": f" {colors[i % 4]}",
             "references": [f" {colors[i % 4]}", f" {colors[i % 4]} color"]} for i in range(n)]


@pytest.fixture(scope="module")
def gen_run(tiny_llama, tmp_path_factory):
    import adapterkit

    d = tmp_path_factory.mktemp("gen_run")
    f = d / "train.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    r = tiny_recipe(tiny_llama, {"train": f, "validation": f}, d / "run",
                    task={"type": "causal_lm", "generation_metrics": ["bleu", "chrf", "exact_match"],
                          "generation": {"max_new_tokens": 3, "batch_size": 8}},
                    # no early_stopping: the first generation metric (bleu) selects and heads the run
                    training={"max_steps": 30, "batch_size": 8, "lr": 3e-2, "log_every": 5, "eval_every": 10, "trackers": ["tensorboard"]})
    return d / "run", adapterkit.train(adapterkit.recipe_from_dict(r)), f


@pytest.mark.slow
def test_generated_text_metrics_reach_metrics_log_report_and_tracker(gen_run):
    run, final, _ = gen_run
    val = final["validation"]
    assert {"bleu", "chrf", "exact_match", "perplexity"} <= set(val) and 0 <= val["bleu"] <= 100
    assert json.loads((run / "metrics.json").read_text())["validation"]["bleu"] == val["bleu"]
    evals = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines() if '"event": "eval"' in l]
    assert len(evals) == 3 and all("bleu" in e for e in evals)
    assert "bleu" in (run / "report.html").read_text()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(next((run / "trackers").rglob("events.out.tfevents.*")).parent))
    acc.Reload()
    assert {"validation/bleu", "final/validation/bleu"} <= set(acc.Tags()["scalars"])
    best = max(evals, key=lambda e: (e["bleu"], -e["step"]))
    assert final["train"]["best_step"] == best["step"]  # early stopping selected on BLEU
    h = final["selection"]["headline"]
    assert h["metric"] == "bleu" and set(h["also"]) == {"chrf", "exact_match"}
    kept = [json.loads(line) for line in (run / "generations" / "validation.jsonl").read_text().splitlines()]
    assert len(kept) == len(_rows()) and all(set(g) == {"prompt", "output", "references"} for g in kept)
    from adapterkit import metrics

    # the kept texts are the ones the final validation score was computed from
    assert metrics.compute(("bleu",), [g["output"] for g in kept], [g["references"] for g in kept])["bleu"] == val["bleu"]


@pytest.mark.slow
def test_generate_file_zero_shot_eval_and_export_generate_alike(gen_run, tmp_path):
    from adapterkit.deploy import export
    from adapterkit.heads.lm import GenerationSettings
    from adapterkit.inference import eval_run, generate
    from adapterkit.model.generation import generate_batch

    run, final, data = gen_run
    out = tmp_path / "gen.jsonl"
    res = cli("generate", run, "--file", data, "--out", out)
    assert res.code == 0, res.err
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == 16 and all(set(r) == {"prompt", "completion", "references"} for r in rows)
    assert rows == [dict(r, completion=c["completion"]) for r, c in zip(_rows(), generate(run, file=data))]
    zero = eval_run(run, zero_shot=True)
    assert "bleu" in zero and zero["loss"] > final["validation"]["loss"]
    # The merged export generates the same greedy text as the run.
    export(run, tmp_path / "exp", requantize=False)
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "exp").eval()
    from adapterkit.model import load_run

    loaded = load_run(run)
    prompts = [loaded.tokenizer(r["prompt"], add_special_tokens=False)["input_ids"] for r in _rows(8)]
    settings = GenerationSettings(max_new_tokens=5, batch_size=8)
    assert generate_batch(merged, loaded.tokenizer, prompts, settings) == generate_batch(loaded.model, loaded.tokenizer, prompts, settings)
    assert cli("generate", run).code == 2


def test_webnlg_recipe_passes_preflight_on_the_real_data(tmp_path):
    """The shipped data-to-text recipe reads WebNLG as it is: prompts, completions, every reference of a triple set."""
    from adapterkit.config import resolve_paths
    from adapterkit.data import raw_splits
    from adapterkit.heads import HEADS
    from adapterkit.model import load_recipe
    from adapterkit.training import preflight

    shared_data("webnlg")
    recipe = resolve_paths(load_recipe(ROOT / "recipes" / "smollm2-webnlg-lora-int8.yaml", [f"training.output_dir={tmp_path / 'run'}"]))
    preflight(recipe)
    raw, _ = raw_splits(recipe, HEADS["causal_lm"], check=False)
    val, _ = raw["validation"]
    refs = val[recipe.data.references_column]
    assert len(val) == 870 and max(len(r) for r in refs) > 1 and all(isinstance(x, str) for r in refs for x in r)


@pytest.mark.parametrize("metric,ok", [("bleu", False), ("rougeL", False), ("chrf", True), ("perplexity", True)])
def test_selection_on_a_generated_metric_the_recipe_does_not_compute_fails_before_loading(tiny_llama, tmp_path, metric, ok):
    import adapterkit
    from adapterkit.errors import RecipeError
    from adapterkit.training import preflight

    f = tmp_path / "train.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    r = adapterkit.recipe_from_dict(tiny_recipe(tiny_llama, {"train": f, "validation": f}, tmp_path / "run",
                                                task={"type": "causal_lm", "generation_metrics": ["chrf"]},
                                                training={"early_stopping": {"metric": metric}}))
    if ok:
        preflight(r)
    else:
        with pytest.raises(RecipeError, match=rf"training.early_stopping.metric: '{metric}' is not among .*loss, perplexity, chrf"):
            preflight(r)
