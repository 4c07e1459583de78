"""`adapterkit compare`: the paired bootstrap and McNemar's test on known cases, identical runs differ by exactly 0
with p = 1, and runs that cannot be compared are one line naming the difference."""
import csv

import numpy as np
import pytest

from helpers import cli, tiny_recipe, write_ner, write_sentiment
from adapterkit.stats import mcnemar_exact, mean_sd, paired_bootstrap, summarize


def test_bootstrap_interval_matches_the_normal_interval_of_a_known_case():
    rng = np.random.default_rng(1)
    n = 4000
    a = rng.random(n) < 0.80  # two classifiers' right/wrong, independent: d = a - b has a known spread
    b = rng.random(n) < 0.70
    acc = lambda x: (lambda idx: {"accuracy": float(x[idx].mean())})
    d = paired_bootstrap(acc(a), acc(b), n, samples=2000, seed=0)["accuracy"]
    diff = a.astype(float) - b.astype(float)
    half = 1.96 * diff.std(ddof=1) / np.sqrt(n)
    assert d.diff == pytest.approx(diff.mean())
    assert d.low == pytest.approx(diff.mean() - half, abs=0.15 * half)
    assert d.high == pytest.approx(diff.mean() + half, abs=0.15 * half)
    assert d.low > 0  # a 10-point gap on 4,000 examples is clear


def test_identical_predictions_differ_by_exactly_zero_with_p_one():
    x = np.array([True, False, True, True])
    d = paired_bootstrap(lambda i: {"m": float(x[i].mean())}, lambda i: {"m": float(x[i].mean())}, 4, samples=200)["m"]
    assert (d.diff, d.low, d.high) == (0.0, 0.0, 0.0)
    assert mcnemar_exact(x, x) == {"only_a_correct": 0, "only_b_correct": 0, "p": 1.0}


def test_mcnemar_exact_known_values():
    a = np.array([True] * 10 + [False] * 5)
    b = np.array([False] * 10 + [False] * 5)
    assert mcnemar_exact(a, b)["p"] == pytest.approx(2 * 0.5 ** 10)  # 10 discordant pairs, all one way
    a = np.array([True] * 6 + [False] * 4)
    b = np.array([False] * 6 + [True] * 4)
    assert mcnemar_exact(a, b)["p"] == pytest.approx(0.75390625)  # binomial(10, 0.5), two-sided, k=4


def test_mean_sd_and_summary():
    assert mean_sd([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_sd([5.0]) == (5.0, 0.0)
    s = summarize([{"accuracy": 0.8, "note": "x"}, {"accuracy": 0.9, "note": "y"}])
    assert list(s) == ["accuracy"] and s["accuracy"]["mean"] == pytest.approx(0.85)


@pytest.fixture(scope="module")
def runs(tiny_bert, tmp_path_factory):
    from adapterkit.model import recipe_from_dict
    from adapterkit.training import train

    d = tmp_path_factory.mktemp("compare")
    files = write_sentiment(d)
    out = {}
    for name, seed in (("a", 0), ("b", 1)):
        out[name] = d / name
        train(recipe_from_dict(tiny_recipe(tiny_bert, files, out[name], training={"epochs": 1, "seed": seed})))
    three = d / "three"  # the same texts with a third label
    three.mkdir()
    for split in ("train", "validation"):
        rows = list(csv.reader(open(files[split])))
        rows[1][1] = "neutral"
        with open(three / f"{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
    out["three"] = d / "run3"
    train(recipe_from_dict(tiny_recipe(tiny_bert, {s: three / f"{s}.csv" for s in ("train", "validation")}, out["three"],
                                       training={"epochs": 1})))
    (d / "ner_data").mkdir()
    ner = write_ner(d / "ner_data")
    out["ner"] = d / "ner"
    train(recipe_from_dict(tiny_recipe(tiny_bert, ner, out["ner"], task={"type": "token_classification"}, training={"epochs": 1})))
    out["files"] = files
    return out


@pytest.mark.slow
def test_compare_a_run_with_itself_and_with_another(runs, tmp_path):
    from adapterkit.inference.compare import compare

    same = compare(runs["a"], runs["a"], split="validation", samples=200, out=tmp_path / "cmp")
    assert same["examples"] == 32
    for d in same["metrics"].values():
        assert d["diff"] == 0.0 and d["low"] == 0.0 and d["high"] == 0.0
    assert same["mcnemar"]["p"] == 1.0
    assert (tmp_path / "cmp" / "compare.md").read_text().count("| accuracy |") == 1
    other = compare(runs["a"], runs["b"], split="validation", samples=200)
    acc = other["metrics"]["accuracy"]
    assert acc["low"] <= acc["diff"] <= acc["high"] and acc["diff"] == pytest.approx(acc["a"] - acc["b"])
    m = other["mcnemar"]
    # the discordant counts are the accuracy difference, example by example
    assert (m["only_a_correct"] - m["only_b_correct"]) / 32 == pytest.approx(acc["diff"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("other,expected", [
    ("three", "different label sets: only in {a}: []; only in {b}: ['neutral']"),
    ("ner", "task.type differs: {a} is 'sequence_classification', {b} is 'token_classification'"),
])
def test_incomparable_runs_are_one_line(runs, other, expected):
    res = cli("compare", runs["a"], runs[other], "--split", "validation")
    assert res.code == 2
    err = res.err.strip().splitlines()
    assert len(err) == 1 and expected.format(a=runs["a"], b=runs[other]) in err[0], err


@pytest.mark.slow
def test_baseline_needs_a_zero_shot_head(runs):
    res = cli("compare", runs["a"], "--baseline", "--split", "validation")
    assert res.code == 2
    assert "has a trained head; train its head-only baseline" in res.err


@pytest.mark.slow
def test_baseline_compares_a_decoder_run_with_its_base_model(tiny_llama, tmp_path):
    from adapterkit.inference import eval_run
    from adapterkit.inference.compare import compare
    from adapterkit.model import recipe_from_dict
    from adapterkit.training import train

    files = write_sentiment(tmp_path)
    r = tiny_recipe(tiny_llama, files, tmp_path / "lw", task={"type": "label_words", "label_words": {"pos": "good", "neg": "bad"},
                                                              "prompt_template": "review : {text} . sentiment :"}, training={"epochs": 2})
    train(recipe_from_dict(r))
    res = compare(tmp_path / "lw", baseline=True, split="validation", samples=100)
    tuned, base = eval_run(tmp_path / "lw"), eval_run(tmp_path / "lw", zero_shot=True)
    acc = res["metrics"]["accuracy"]
    assert (acc["a"], acc["b"]) == (pytest.approx(tuned["accuracy"]), pytest.approx(base["accuracy"]))
    assert "zero-shot" in res["b"] and res["mcnemar"]["only_a_correct"] + res["mcnemar"]["only_b_correct"] >= abs(acc["diff"]) * 32 - 1e-6


def test_entity_counts_reproduce_seqeval_on_any_resample():
    """compare's NER bootstrap sums per-sentence entity counts: on random tag sequences (broken spans, I- without
    B-, several types) and on resamples with repeats, exactly seqeval's precision, recall, F1, accuracy, macro F1."""
    import torch

    from adapterkit.heads.token import counts_metrics, entity_counts, token_metrics

    labels = ["B-LOC", "B-MISC", "B-PER", "I-LOC", "I-MISC", "I-PER", "O"]
    rng = np.random.default_rng(0)
    refs = torch.tensor(rng.choice(7, size=(60, 12), p=[0.08, 0.04, 0.08, 0.05, 0.03, 0.05, 0.67]))
    refs[:, -2:] = -100  # padding
    noise = torch.tensor(rng.random((60, 12)) < 0.2)
    preds = torch.where(noise, torch.tensor(rng.integers(0, 7, (60, 12))), refs.clamp(min=0))
    counts = entity_counts(preds, refs, labels)
    for idx in (np.arange(60), rng.integers(0, 60, 60), rng.integers(0, 60, 60), np.array([3, 3, 3])):
        slow = token_metrics(preds[idx], refs[idx], labels)
        fast = counts_metrics(counts, idx)
        for k, v in fast.items():
            assert v == slow[k], (k, idx[:5])
