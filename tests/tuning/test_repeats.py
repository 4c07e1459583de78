"""`train --seeds` and `train --cv`: one run folder per repeat, mean ± sd of every metric, stratified folds that
partition the training rows, and a rerun that reads finished repeats instead of training them again."""
import json
from collections import Counter

import numpy as np
import pytest
import yaml

from conftest import tiny_recipe, write_sentiment


def _recipe(tmp_path, tiny_bert, **data):
    files = write_sentiment(tmp_path, n_train=60, n_val=16)
    r = tmp_path / "r.yaml"
    rec = tiny_recipe(tiny_bert, files, tmp_path / "series", training={"epochs": 1, "batch_size": 16}, data=data)
    r.write_text(yaml.safe_dump(rec))
    return r, files


@pytest.mark.slow
def test_seeds_summary_is_the_mean_and_sd_of_the_runs(tiny_bert, tmp_path, capsys):
    from adapterkit.cli import main

    r, _ = _recipe(tmp_path, tiny_bert)
    main(["train", str(r), "--seeds", "0,3"])
    out = tmp_path / "series"
    accs = [json.loads((out / f"seed-{s}" / "metrics.json").read_text())["validation"]["accuracy"] for s in (0, 3)]
    summary = json.loads((out / "summary.json").read_text())["summary"]["validation/accuracy"]
    assert summary["values"] == accs
    assert summary["mean"] == pytest.approx(np.mean(accs)) and summary["sd"] == pytest.approx(np.std(accs, ddof=1), abs=1e-6)
    assert yaml.safe_load((out / "seed-3" / "recipe.yaml").read_text())["training"]["seed"] == 3
    assert "| validation/accuracy |" in capsys.readouterr().out
    stamp = (out / "seed-0" / "run.json").stat().st_mtime_ns
    main(["train", str(r), "--seeds", "0,3"])  # the same series again: read, not retrained
    assert (out / "seed-0" / "run.json").stat().st_mtime_ns == stamp
    assert "seed-0: finished before" in capsys.readouterr().err


@pytest.mark.slow
def test_cv_folds_partition_the_training_rows_stratified(tiny_bert, tmp_path, capsys):
    from adapterkit.cli import main

    r, files = _recipe(tmp_path, tiny_bert)
    main(["train", str(r), "--cv", "3"])
    out = tmp_path / "series"
    assert "the recipe's validation split" in capsys.readouterr().err  # the recipe's own validation file is set aside
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


def test_bad_repeats_are_one_line(tiny_bert, tmp_path, capsys):
    from adapterkit.cli import main

    r, _ = _recipe(tmp_path, tiny_bert)
    for args, expected in ((["--seeds", "x"], "--seeds: 'x'; expected a count"),
                           (["--cv", "40"], "data.cv_folds: 40 stratified folds, but a class has only 30 training row(s)"),
                           (["--seeds", "2", "--resume"], "--resume: not with --seeds or --cv")):
        with pytest.raises(SystemExit) as e:
            main(["train", str(r), *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and expected in err[-1] and err[-1].startswith("adapterkit: error:"), err
