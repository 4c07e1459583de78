"""`train --seeds` and `train --cv`: one run folder per repeat, mean ± sd of every metric, stratified folds that
partition the training rows, and a rerun that reads finished repeats instead of training them again."""
import json
import re
from collections import Counter

import numpy as np
import pytest
import yaml

from helpers import cli, tiny_recipe, write_recipe, write_sentiment


def _recipe(tmp_path, tiny_bert, **data):
    """A one-epoch recipe on 60 training rows (30 a class) writing the series to tmp_path/series: (path, files)."""
    files = write_sentiment(tmp_path, n_train=60, n_val=16)
    rec = tiny_recipe(tiny_bert, files, tmp_path / "series", training={"epochs": 1, "batch_size": 16}, data=data)
    return write_recipe(tmp_path / "r.yaml", rec), files


@pytest.mark.slow
def test_seeds_summary_is_the_mean_and_sd_of_the_runs(tiny_bert, tmp_path):
    r, _ = _recipe(tmp_path, tiny_bert)
    first = cli("train", r, "--seeds", "0,3")
    assert first.code == 0, first.err
    out = tmp_path / "series"
    accs = [json.loads((out / f"seed-{s}" / "metrics.json").read_text())["validation"]["accuracy"] for s in (0, 3)]
    summary = json.loads((out / "summary.json").read_text())["summary"]["validation/accuracy"]
    assert summary["values"] == accs
    assert summary["mean"] == pytest.approx(np.mean(accs)) and summary["sd"] == pytest.approx(np.std(accs, ddof=1), abs=1e-6)
    assert yaml.safe_load((out / "seed-3" / "recipe.yaml").read_text())["training"]["seed"] == 3
    assert "| validation/accuracy |" in first.out
    stamp = (out / "seed-0" / "run.json").stat().st_mtime_ns
    again = cli("train", r, "--seeds", "0,3")  # the same series again: read, not retrained
    assert again.code == 0, again.err
    assert (out / "seed-0" / "run.json").stat().st_mtime_ns == stamp
    assert "seed-0: finished before" in again.err


@pytest.mark.slow
def test_cv_folds_partition_the_training_rows_stratified(tiny_bert, tmp_path):
    r, files = _recipe(tmp_path, tiny_bert)
    res = cli("train", r, "--cv", "3")
    assert res.code == 0, res.err
    out = tmp_path / "series"
    assert "the recipe's validation split" in res.err  # the recipe's own validation file is set aside
    labels = [line.rsplit(",", 1)[1] for line in files["train"].read_text().splitlines()[1:]]
    held = []
    for i in range(3):
        split = json.loads((out / f"fold-{i}" / "data_split.json").read_text())
        assert split["cv_fold"] == i and split["train_rows"] + len(split["validation_rows"]) == 60
        held += split["validation_rows"]
        counts = Counter(labels[j] for j in split["validation_rows"])
        assert abs(counts["pos"] - counts["neg"]) <= 1  # stratified: the 50/50 label mix in every fold
        assert json.loads((out / f"fold-{i}" / "metrics.json").read_text())["validation"]
    assert sorted(held) == list(range(60))  # every training row is held out exactly once
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cv_folds"] == 3 and len(summary["summary"]["validation/accuracy"]["values"]) == 3


def test_bad_repeats_are_one_line(tiny_bert, tmp_path):
    r, _ = _recipe(tmp_path, tiny_bert)
    for args, expected in ((["--seeds", "x"], "--seeds: 'x'; expected a count"),
                           (["--cv", "40"], "data.cv_folds: 40 stratified folds, but a class has only 30 training row(s)"),
                           (["--seeds", "2", "--resume"], "--resume: not with --seeds or --cv")):
        res = cli("train", r, *args)
        err = res.err.strip().splitlines()
        assert res.code == 2 and expected in err[-1] and err[-1].startswith("adapterkit: error:"), err


def test_seed_and_fold_counts_are_bounded_before_anything_is_planned(monkeypatch):
    import adapterkit.tuning.repeats as repeats
    from adapterkit.errors import RecipeError

    def no_list(*a):
        raise AssertionError("a list of seeds was made before the count was checked")

    assert repeats.parse_seeds(str(repeats.MAX_SEEDS), 5) == list(range(5, 5 + repeats.MAX_SEEDS))
    monkeypatch.setattr(repeats, "range", no_list, raising=False)
    for text, expected in (("1000000", "--seeds: 1000000 runs; expected a count from 1 to 1000"),
                           (",".join(["1"] * 2000), "--seeds: more than 1000 seeds"),
                           ("9" * 5000, "expected a count (3) or a comma list"),
                           ("4294967295,4294967296", "--seeds: seed 4294967296 is out of range")):
        with pytest.raises(RecipeError, match=re.escape(expected)):
            repeats.parse_seeds(text, 0)
    for seeds, folds, expected in ((None, 1, "--cv: 1; expected a number of folds from 2 to 100"), (None, 101, "--cv: 101"),
                                   (None, True, "--cv: True"), (list(range(11)), 100, "11 seeds x 100 folds = 1100 runs")):
        with pytest.raises(RecipeError, match=re.escape(expected)):
            repeats.check_counts(seeds, folds)
    repeats.check_counts(list(range(10)), 100)
    repeats.check_counts(list(range(1000)), None)
