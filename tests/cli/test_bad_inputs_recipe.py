"""Bad input, table-driven, part 2 (issue #21): recipe values (encoding, nesting, seeds, non-finite numbers, booleans
for numbers, duplicate labels) and command-line options (--max-examples, --scales, --weights, input files, --out).
Each case goes through `adapterkit.cli.main` and must end with exit code 2 and one stderr line naming the field,
option or file, before any model loads. Below the table: the file-safety rules (replace_dir, atomic_write_text, export
and merge delete only what adapterkit made) and the no-space-left line."""
import errno
import importlib
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from adapterkit import files
from adapterkit.cli import main
from adapterkit.model import load_recipe, recipe_from_dict
from test_bad_inputs import Ctx, _fake_run, trained_run  # noqa: F401  (trained_run: the module-scoped fixture, trained once here)
from conftest import one_error_line

LATIN1 = "text,label\ncaf\xe9 cr\xe8me was great,pos\nbad,neg\n".encode("latin-1")  # é as one byte: not UTF-8


def _bytes(c: Ctx, name: str, data: bytes) -> str:
    p = c.root / name
    p.write_bytes(data)
    return str(p)


def _latin1_recipe(c: Ctx) -> list[str]:
    text = yaml.safe_dump(c.recipe()) + "# r\xe9sum\xe9\n"
    return ["train", _bytes(c, "r.yaml", text.encode("latin-1"))]


def _link(c: Ctx) -> str:
    (c.root / "real").mkdir()
    os.symlink(c.root / "real", c.root / "link")
    return str(c.root / "link")


def _two_runs(c: Ctx) -> list[str]:
    return [_fake_run(c, "lora"), str(c.root)]


def _earlier_export(c: Ctx) -> str:
    d = c.root / "e"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"x")
    (d / "export_report.json").write_text(json.dumps({"files": {"model.safetensors": {"bytes": 1}}}))
    (d / "NOTES.md").write_text("the user's own notes")
    return str(d)


# (case id, argv builder, substrings the single error line must contain)
CASES = [
    # ---- recipe ----
    ("recipe-not-utf8", _latin1_recipe, ["r.yaml: not UTF-8 text", "at byte"]),
    ("recipe-too-deep", lambda c: ["train", c.write("a: " + "[" * 3000)], ["r.yaml", "nested more than 64 levels deep"]),
    ("recipe-too-deep-set", lambda c: c.train("adapter.target_modules=" + "[" * 3000), ["--set adapter.target_modules", "nested"]),
    ("recipe-seed-negative", lambda c: c.train("training.seed=-1"), ["training.seed: -1 is out of range", "0 to 4294967295"]),
    ("recipe-seed-huge", lambda c: c.train(f"training.seed={2**70}"), ["training.seed", "out of range", "2**32-1"]),
    ("recipe-epochs-inf-yaml", lambda c: ["train", c.write(yaml.safe_dump(c.recipe()).replace("epochs: 2", "epochs: .inf"))],
     ["training.epochs: inf is not a finite number"]),
    ("recipe-lr-nan-set", lambda c: c.train("training.lr=.nan"), ["training.lr: nan is not a finite number"]),
    ("recipe-epochs-inf-string", lambda c: c.train("training.epochs=inf"), ["training.epochs", "finite number"]),
    ("recipe-method-setting-nan", lambda c: c.train("adapter.alpha=.nan"), ["adapter.alpha: nan is not a finite number"]),
    ("recipe-mixed-precision-off", lambda c: c.train("training.mixed_precision=off"), ["training.mixed_precision", "'no'"]),
    ("recipe-bool-batch-size", lambda c: c.train("training.batch_size=true"), ["training.batch_size", "expected an integer"]),
    ("recipe-bool-lr", lambda c: c.train("training.lr=false"), ["training.lr", "expected a number"]),
    ("recipe-bool-method-setting", lambda c: c.train("adapter.r=true"), ["adapter.r", "expected an integer"]),
    ("recipe-method-setting-inf-string", lambda c: c.train("adapter.alpha=inf"), ["adapter.alpha: inf is not a finite number"]),
    ("recipe-bool-head-setting", lambda c: c.train("task.type=multi_label", "task.threshold=true"), ["task.threshold", "expected a number"]),
    ("recipe-duplicate-labels", lambda c: c.train("task.labels=[neg, pos, neg]"), ["task.labels", "'neg' is listed twice"]),
    # ---- options ----
    ("sweep-max-examples-zero", lambda c: ["sweep", _fake_run(c, "lora"), "--max-examples", "0"], ["--max-examples: 0", "positive"]),
    ("sweep-max-examples-negative", lambda c: ["sweep", _fake_run(c, "lora"), "--max-examples", "-3"], ["--max-examples: -3"]),
    ("sweep-scales-nan", lambda c: ["sweep", _fake_run(c, "lora"), "--scales", "0,nan,1"], ["--scales: nan is not a finite number"]),
    ("sweep-scales-inf", lambda c: ["sweep", _fake_run(c, "lora"), "--scales", "inf"], ["--scales: inf is not a finite number"]),
    ("merge-weights-nan", lambda c: ["merge", *_two_runs(c), "--out", str(c.root / "m"), "--weights", "nan,1"],
     ["--weights: nan,1.0", "finite"]),
    ("merge-weights-inf", lambda c: ["merge", *_two_runs(c), "--out", str(c.root / "m"), "--weights", "1,-inf"], ["--weights", "finite"]),
    ("predict-file-not-utf8", lambda c: ["predict", _fake_run(c, "lora"), "--file", _bytes(c, "texts.txt", LATIN1)],
     ["--file:", "texts.txt is not UTF-8 text", "at byte offset 14"]),
    ("eval-data-not-utf8", lambda c: ["eval", _fake_run(c, "lora"), "--data", _bytes(c, "v.csv", LATIN1)], ["--data:", "v.csv is not UTF-8"]),
    ("compare-data-not-utf8", lambda c: ["compare", _fake_run(c, "lora"), str(c.root), "--data", _bytes(c, "v.csv", LATIN1)],
     ["--data:", "v.csv is not UTF-8"]),
    ("generate-file-not-utf8", lambda c: ["generate", _fake_run(c, "lora"), "--file", _bytes(c, "p.jsonl", LATIN1)],
     ["--file:", "p.jsonl is not UTF-8"]),
    ("export-out-is-a-file", lambda c: ["export", _fake_run(c, "lora"), "--out", c.file("taken", "x")], ["--out:", "taken is a file"]),
    ("export-out-is-a-symlink", lambda c: ["export", _fake_run(c, "lora"), "--out", _link(c)], ["--out:", "link is a symlink"]),
    ("export-out-unwritable", lambda c: ["export", _fake_run(c, "lora"), "--out", str(Path(c.file("taken", "x")) / "e")],
     ["--out: cannot write to", "taken is a file, not a folder"]),
    ("export-out-earlier-export-plus-user-file", lambda c: ["export", _fake_run(c, "lora"), "--out", _earlier_export(c)],
     ["--out:", "files it did not write", "NOTES.md"]),
    ("merge-out-is-a-file", lambda c: ["merge", *_two_runs(c), "--out", c.file("taken", "x")], ["--out:", "taken is a file"]),
    ("merge-out-is-a-symlink", lambda c: ["merge", *_two_runs(c), "--out", _link(c)], ["--out:", "is a symlink"]),
    ("sweep-out-is-a-file", lambda c: ["sweep", _fake_run(c, "lora"), "--out", c.file("taken", "x")], ["--out:", "taken is a file"]),
    ("sweep-out-unwritable", lambda c: ["sweep", _fake_run(c, "lora"), "--out", str(Path(c.file("taken", "x")) / "s")],
     ["--out: cannot write to", "is a file, not a folder"]),
    ("compare-out-is-a-file", lambda c: ["compare", _fake_run(c, "lora"), str(c.root), "--out", c.file("taken", "x")], ["--out:", "taken is a file"]),
    ("compare-out-is-a-symlink", lambda c: ["compare", _fake_run(c, "lora"), str(c.root), "--out", _link(c)], ["--out:", "is a symlink"]),
    ("generate-out-is-a-folder", lambda c: ["generate", _fake_run(c, "lora"), "--prompt", "hi", "--out", str(c.root)], ["--out:", "is a folder"]),
]





@pytest.mark.parametrize("case,build,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(case, build, expected, tiny_bert, tiny_llama, tmp_path, capsys, no_model):
    c = Ctx(tmp_path, tiny_bert, tiny_llama, lambda: pytest.fail("these cases need no trained run"))
    line = one_error_line(build(c), capsys)
    for s in expected:
        assert s in line, f"{s!r} not in {line!r}"


def test_table_ids_are_unique():
    assert len({c[0] for c in CASES}) == len(CASES)


# ---- mixed_precision: no ----

def _bare(c) -> dict:
    """The tiny recipe without its training.mixed_precision (the shared test recipe pins it)."""
    r = c.recipe()
    r["training"].pop("mixed_precision")
    return r


@pytest.mark.parametrize("how", ["set", "yaml"])
def test_mixed_precision_no_is_accepted(how, tiny_bert, tmp_path):
    """`no` stays the string "no" (YAML 1.2 booleans: only true/false), from --set and in a file alike."""
    c = Ctx(tmp_path, tiny_bert, tiny_bert, None)
    if how == "set":
        r = load_recipe(c.write(_bare(c)), ["training.mixed_precision=no"])
    else:
        r = load_recipe(c.write(yaml.safe_dump(_bare(c)).replace("training:\n", "training:\n  mixed_precision: no\n")))
    assert r.training.mixed_precision == "no"


def test_yes_no_words_still_set_booleans(tiny_bert, tmp_path):
    c = Ctx(tmp_path, tiny_bert, tiny_bert, None)
    r = load_recipe(c.write(c.recipe()), ["backbone.gradient_checkpointing=yes", "training.group_by_length=off"])
    assert r.backbone.gradient_checkpointing is True and r.training.group_by_length is False


def test_false_from_another_yaml_reader_means_no(tiny_bert, tmp_path):
    """A dict read by plain yaml.safe_load (YAML 1.1: `no` -> False) still validates."""
    c = Ctx(tmp_path, tiny_bert, tiny_bert, None)
    data = yaml.safe_load(yaml.safe_dump(_bare(c)).replace("training:\n", "training:\n  mixed_precision: no\n"))
    assert data["training"]["mixed_precision"] is False
    assert recipe_from_dict(data).training.mixed_precision == "no"


def test_saved_recipe_round_trips_no(tiny_bert, tmp_path):
    from adapterkit.config import save_recipe

    c = Ctx(tmp_path, tiny_bert, tiny_bert, None)
    r = load_recipe(c.write(_bare(c)), ["training.mixed_precision=no"])
    save_recipe(r, tmp_path / "saved.yaml")
    assert load_recipe(tmp_path / "saved.yaml").training.mixed_precision == "no"


def test_seed_bounds_are_accepted(tiny_bert, tmp_path):
    c = Ctx(tmp_path, tiny_bert, tiny_bert, None)
    assert load_recipe(c.write(c.recipe()), [f"training.seed={2**32 - 1}"]).training.seed == 2**32 - 1


# ---- files adapterkit writes: only its own temporary names are ever deleted ----

def _user_folders(parent: Path, name: str) -> None:
    for suffix in (".tmp", ".old"):
        (parent / f"{name}{suffix}").mkdir()
        (parent / f"{name}{suffix}" / "mine.txt").write_text("the user's own file")


def test_replace_dir_keeps_a_users_tmp_and_old_folders(tmp_path):
    _user_folders(tmp_path, "adapter")
    target = tmp_path / "adapter"
    files.replace_dir(target, lambda d: (d / "a.txt").write_text("1"))
    files.replace_dir(target, lambda d: (d / "a.txt").write_text("2"))  # replaces an existing folder too
    assert (target / "a.txt").read_text() == "2"
    for suffix in (".tmp", ".old"):
        assert (tmp_path / f"adapter{suffix}" / "mine.txt").read_text() == "the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "adapter.old", "adapter.tmp"]  # nothing of ours left


def test_replace_dir_failure_keeps_the_old_folder_and_cleans_up(tmp_path):
    target = tmp_path / "adapter"
    files.replace_dir(target, lambda d: (d / "a.txt").write_text("old"))

    def fail(d):
        (d / "half.txt").write_text("x")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        files.replace_dir(target, fail)
    assert (target / "a.txt").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["adapter"]


def test_replace_dir_keeps_folder_permissions(tmp_path):
    target = tmp_path / "adapter"
    files.replace_dir(target, lambda d: None)
    umask = os.umask(0)
    os.umask(umask)
    assert (target.stat().st_mode & 0o777) == (0o777 & ~umask)  # as mkdir makes it, not mkdtemp's 0o700


def test_atomic_write_text_keeps_a_users_tmp_file(tmp_path):
    (tmp_path / "run.json.tmp").write_text("the user's own file")
    files.atomic_write_text(tmp_path / "run.json", "{}")
    files.atomic_write_text(tmp_path / "run.json", '{"a": 1}')
    assert (tmp_path / "run.json").read_text() == '{"a": 1}'
    assert (tmp_path / "run.json.tmp").read_text() == "the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "run.json.tmp"]


def test_merged_adapter_must_be_finite():
    from adapterkit.interpolation.merge import MergeError, _check_finite

    model = torch.nn.ModuleDict({"merged": torch.nn.Linear(2, 2), "other": torch.nn.Linear(2, 2)})
    with torch.no_grad():
        model["other"].weight.fill_(float("nan"))
    _check_finite(model, "merged")  # only the combined adapter's own weights count
    with torch.no_grad():
        model["merged"].bias[0] = float("inf")
    with pytest.raises(MergeError, match="merged.bias"):
        _check_finite(model, "merged")


# ---- no space left on device ----

def test_no_space_left_is_one_line(tmp_path, monkeypatch, capsys):
    """A full disk while a command writes (here: predict's library call writing a file through atomic_write_text,
    whose failed write names no file): one line naming the file, exit 2, and no temporary file left behind."""
    import adapterkit.inference

    target = tmp_path / "predictions.json"

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def predict(run_dir, texts):
        files.atomic_write_text(target, json.dumps(texts))
        return []

    monkeypatch.setattr(files.os, "fsync", full_disk)
    monkeypatch.setattr(adapterkit.inference, "predict", predict)
    line = one_error_line(["predict", str(tmp_path), "--text", "good film"], capsys)
    assert line.startswith(f"adapterkit: error: no space left on device writing {target}"), line
    assert list(tmp_path.iterdir()) == []


# ---- with a trained run (slow) ----

@pytest.mark.slow
def test_merge_with_nan_result_writes_nothing(trained_run, tmp_path, capsys, monkeypatch):  # noqa: F811
    merge_mod = importlib.import_module("adapterkit.interpolation.merge")  # the package re-exports a function of that name

    def poison(model, name):  # stands in for a combination that overflows
        with torch.no_grad():
            for n, p in model.named_parameters():
                if name in n.split("."):
                    p.fill_(float("nan"))

    monkeypatch.setattr(merge_mod, "_fix_rslora_scaling", poison)
    out = tmp_path / "merged"
    line = one_error_line(["merge", str(trained_run), str(trained_run), "--out", str(out), "--no-eval"], capsys)
    assert "combined adapter has NaN or inf values" in line and "nothing was written" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_merge_and_export_keep_a_users_tmp_folder(trained_run, tmp_path, capsys):  # noqa: F811
    for name in ("merged", "exported"):
        _user_folders(tmp_path, name)
    main(["merge", str(trained_run), str(trained_run), "--out", str(tmp_path / "merged"), "--no-eval"])
    main(["export", str(trained_run), "--out", str(tmp_path / "exported"), "--format", "adapter", "--verify-samples", "4"])
    main(["export", str(trained_run), "--out", str(tmp_path / "exported"), "--format", "adapter", "--verify-samples", "4"])  # replaces it
    assert (tmp_path / "merged" / "run.json").is_file() and (tmp_path / "exported" / "export_report.json").is_file()
    for name in ("merged", "exported"):
        for suffix in (".tmp", ".old"):
            assert (tmp_path / f"{name}{suffix}" / "mine.txt").read_text() == "the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "exported.old", "exported.tmp", "merged", "merged.old", "merged.tmp"]
