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
from adapterkit.model import load_recipe, recipe_from_dict
from test_bad_inputs import Ctx, _fake_run, _with_method, trained_run  # noqa: F401  (trained_run: the module-scoped fixture, trained once here)
from helpers import cli, one_error_line

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


def _bomb(levels: int = 9, width: int = 9, merge: bool = False) -> str:
    """A billion-laughs document (under 1 KB): each anchor repeats the one before `width` times, 9**9 values in all;
    with `merge`, the repeats are YAML merge keys (`<<`) instead of list items."""
    if merge:
        lines = ["l0: &l0 {a: 1, b: 2}"] + [f"l{i}: &l{i} {{<<: [{', '.join([f'*l{i - 1}'] * width)}], k{i}: 1}}" for i in range(1, levels)]
    else:
        lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"] + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _bomb_recipe(c: Ctx, **kw) -> list[str]:
    """The tiny recipe with a bomb under task.labels (a list key the value checks walk)."""
    return ["train", c.write(yaml.safe_dump(c.recipe()) + _bomb(**kw) + "extra: *l8\n")]


def _space(c: Ctx, text: str, *extra) -> list[str]:
    return ["tune", c.write(c.recipe()), "--space", c.file("space.yaml", text), *extra]


def _earlier_export(c: Ctx) -> str:
    d = c.root / "e"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"x")
    (d / "export_report.json").write_text(json.dumps({"files": {"model.safetensors": {"bytes": 1}}}))
    (d / "NOTES.md").write_text("the user's own notes")
    return str(d)


def _proc(c: Ctx, name: str) -> str:
    """A path where nothing can be created, even by root (os.access says yes to root): under /proc."""
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system")
    return f"/proc/no-such-folder/{name}"


def _tune(c: Ctx, out: str) -> list[str]:
    space = c.file("space.yaml", "training.lr: {low: 1.0e-4, high: 1.0e-3, log: true}\n")
    return ["tune", c.write(c.recipe()), "--space", space, "--trials", "1", "--out", out]


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
     ["--out:", "did not list as its own", "NOTES.md"]),
    ("merge-out-is-a-file", lambda c: ["merge", *_two_runs(c), "--out", c.file("taken", "x")], ["--out:", "taken is a file"]),
    ("merge-out-is-a-symlink", lambda c: ["merge", *_two_runs(c), "--out", _link(c)], ["--out:", "is a symlink"]),
    ("sweep-out-is-a-file", lambda c: ["sweep", _fake_run(c, "lora"), "--out", c.file("taken", "x")], ["--out:", "taken is a file"]),
    ("sweep-out-unwritable", lambda c: ["sweep", _fake_run(c, "lora"), "--out", str(Path(c.file("taken", "x")) / "s")],
     ["--out: cannot write to", "is a file, not a folder"]),
    ("compare-out-is-a-file", lambda c: ["compare", _fake_run(c, "lora"), str(c.root), "--out", c.file("taken", "x")], ["--out:", "taken is a file"]),
    ("compare-out-is-a-symlink", lambda c: ["compare", _fake_run(c, "lora"), str(c.root), "--out", _link(c)], ["--out:", "is a symlink"]),
    ("generate-out-is-a-folder", lambda c: ["generate", _fake_run(c, "lora"), "--prompt", "hi", "--out", str(c.root)], ["--out:", "is a folder"]),
    # ---- issue #36 class 5: inputs without bounds (each refused at once, before any work) ----
    ("recipe-alias-bomb", _bomb_recipe, ["r.yaml: YAML aliases", "more than 100,000 extra values"]),
    ("recipe-alias-bomb-merge-keys", lambda c: _bomb_recipe(c, levels=30, width=2, merge=True), ["r.yaml: YAML aliases", "100,000"]),
    ("recipe-alias-recursive", lambda c: ["train", c.write(yaml.safe_dump(c.recipe()) + "loop: &x [1, *x]\n")], ["r.yaml", "alias", "contains it"]),
    ("recipe-alias-bomb-set", lambda c: c.train("task.labels=[" + _bomb().replace("\n", ", ").rstrip(", ") + "]"),  # [l0: &l0 [...], ...]
     ["--set task.labels: YAML aliases"]),
    ("recipe-huge-integer", lambda c: c.train("training.max_steps=" + "9" * 5000), ["training.max_steps"]),
    ("recipe-huge-integer-yaml", lambda c: ["train", c.write(yaml.safe_dump(c.recipe()).replace("epochs: 2", "epochs: " + "9" * 5000))],
     ["r.yaml: not valid YAML at line", "too many digits"]),
    ("recipe-max-steps-huge", lambda c: c.train(f"training.max_steps={10**20}"), ["training.max_steps", "less than or equal to 1000000000"]),
    ("recipe-max-steps-float-huge", lambda c: c.train("training.max_steps=1e20"), ["training.max_steps", "integer"]),
    ("recipe-epochs-huge", lambda c: c.train("training.epochs=1e9"), ["training.epochs", "less than or equal to 100000"]),
    ("recipe-batch-size-huge", lambda c: c.train("training.batch_size=10000000"), ["training.batch_size", "less than or equal to 65536"]),
    ("recipe-eval-batch-size-huge", lambda c: c.train("training.eval_batch_size=10000000"), ["training.eval_batch_size", "65536"]),
    ("recipe-accumulation-huge", lambda c: c.train("training.gradient_accumulation=10000000"), ["training.gradient_accumulation", "65536"]),
    ("recipe-eval-every-huge", lambda c: c.train(f"training.eval_every={10**12}"), ["training.eval_every", "1000000000"]),
    ("recipe-checkpoint-every-huge", lambda c: c.train(f"training.checkpoint_every={10**12}"), ["training.checkpoint_every", "1000000000"]),
    ("recipe-keep-checkpoints-huge", lambda c: c.train("training.keep_checkpoints=100000"), ["training.keep_checkpoints", "1000"]),
    ("recipe-max-length-huge", lambda c: c.train(f"data.max_length={10**9}"), ["data.max_length", "less than or equal to 1048576"]),
    ("recipe-cv-folds-huge", lambda c: c.train("data.cv_folds=1000", "data.cv_fold=0", "data.validation=null"), ["data.cv_folds", "100"]),
    ("recipe-lora-rank-huge", lambda c: c.train(f"adapter.r={10**9}"), ["adapter.r", "less than or equal to 65536"]),
    ("recipe-generation-tokens-huge", lambda c: c.train("task.type=causal_lm", f"task.generation.max_new_tokens={10**12}"),
     ["task: generation.max_new_tokens", "1048576"]),
    ("tune-space-max-steps-huge", lambda c: _space(c, "training.max_steps: {low: 10, high: 100000000000000000000}\n"),
     ["space.yaml: training.max_steps", "does not give a valid recipe", "less than or equal to 1000000000"]),
    ("tune-space-max-steps-float-huge", lambda c: _space(c, "training.max_steps: {choices: [10, 1e20]}\n"),
     ["space.yaml: training.max_steps: 1e+20 does not give a valid recipe", "r.yaml: training.max_steps"]),
    ("tune-space-alias-bomb", lambda c: _space(c, _bomb() + "training.lr: {low: 1.0e-4, high: 1.0e-3}\n"), ["space.yaml: YAML aliases"]),
    ("tune-space-infinite-high", lambda c: _space(c, "training.lr: {low: 1.0e-4, high: .inf}\n"), ["space.yaml: training.lr.high: inf is not a finite number"]),
    ("tune-grid-too-many-values", lambda c: _space(c, "training.lr: {low: 1.0e-4, high: 1.0e-2, step: 1.0e-300}\n", "--sampler", "grid"),
     ["space.yaml: training.lr: the grid would try", "at most 10,000"]),
    ("tune-grid-too-many-points", lambda c: _space(c, "".join(f"training.{k}: {{low: 1, high: 100, step: 1}}\n" for k in ("max_steps", "log_every", "eval_every")),
                                                    "--sampler", "grid"), ["space.yaml: the grid has more than 100,000 combinations"]),
    ("train-seeds-million", lambda c: c.train(extra=["--seeds", "1000000"]), ["--seeds: 1000000 runs", "1 to 1000"]),
    ("train-seeds-list-too-long", lambda c: c.train(extra=["--seeds", ",".join(map(str, range(5000)))]), ["--seeds: more than 1000 seeds"]),
    ("train-seeds-out-of-range", lambda c: c.train(extra=["--seeds", f"1,{2**32}"]), ["--seeds: seed 4294967296 is out of range"]),
    ("train-cv-one", lambda c: c.train(extra=["--cv", "1"]), ["--cv: 1; expected a number of folds from 2 to 100"]),
    ("train-cv-huge", lambda c: c.train(extra=["--cv", "1000000"]), ["--cv: 1000000", "2 to 100"]),
    ("train-seeds-times-folds", lambda c: c.train(extra=["--seeds", "20", "--cv", "100"]), ["--seeds and --cv", "2000 runs", "at most 1000"]),
    ("tune-trials-zero", lambda c: _space(c, "training.lr: {low: 1.0e-4, high: 1.0e-3}\n", "--trials", "0"), ["--trials: 0", "1 to 10000"]),
    ("tune-trials-huge", lambda c: _space(c, "training.lr: {low: 1.0e-4, high: 1.0e-3}\n", "--trials", "1000000000"), ["--trials: 1000000000"]),
    ("tune-jobs-huge", lambda c: _space(c, "training.lr: {low: 1.0e-4, high: 1.0e-3}\n", "--jobs", "5000"), ["--jobs: 5000", "1 to 64"]),
    ("tune-cv-huge", lambda c: _space(c, "training.lr: {low: 1.0e-4, high: 1.0e-3}\n", "--cv", "5000"), ["--cv: 5000", "2 to 100"]),
    ("tune-seed-huge", lambda c: _space(c, "training.lr: {low: 1.0e-4, high: 1.0e-3}\n", "--seed", str(2**40)), ["--seed:", "0 to 4294967295"]),
    ("tune-timeout-nan", lambda c: _space(c, "training.lr: {low: 1.0e-4, high: 1.0e-3}\n", "--timeout", "nan"), ["--timeout: nan"]),
    ("generate-max-new-tokens-zero", lambda c: ["generate", _fake_run(c, "lora"), "--prompt", "hi", "--max-new-tokens", "0"],
     ["--max-new-tokens: 0", "1 to 1048576"]),
    ("generate-max-new-tokens-huge", lambda c: ["generate", _fake_run(c, "lora"), "--prompt", "hi", "--max-new-tokens", str(10**12)],
     ["--max-new-tokens"]),
    ("generate-batch-size-huge", lambda c: ["generate", _fake_run(c, "lora"), "--prompt", "hi", "--batch-size", str(10**9)], ["--batch-size", "65536"]),
    ("generate-temperature-nan", lambda c: ["generate", _fake_run(c, "lora"), "--prompt", "hi", "--temperature", "nan"], ["--temperature: nan"]),
    ("inspect-num-labels-zero", lambda c: ["inspect", str(c.bert), "--num-labels", "0"], ["--num-labels: 0"]),
    ("sweep-scales-too-many", lambda c: ["sweep", _fake_run(c, "lora"), "--scales", ",".join(["0.5"] * 500)], ["--scales: more than 100 scales"]),
    # ---- issue #36 class 7: silent coercions ----
    ("recipe-layers-empty", lambda c: c.train("adapter.layers=[]"), ["adapter.layers: an empty list", "omit the key to adapt every block"]),
    ("recipe-layers-bool", lambda c: c.train("adapter.layers=[true]"), ["adapter.layers.0: expected an integer, not the boolean true"]),
    ("recipe-layers-bool-yaml", lambda c: ["train", c.write(yaml.safe_dump(c.recipe(adapter={"layers": [0, False]})))],
     ["adapter.layers.1: expected an integer, not the boolean false"]),
    ("recipe-layers-to-transform-empty", lambda c: c.train("adapter.layers_to_transform=[]"), ["adapter.layers_to_transform: an empty list"]),
    ("recipe-target-modules-empty", lambda c: c.train("adapter.target_modules=[]"), ["adapter.target_modules: an empty list"]),
    ("recipe-ia3-layers-empty", lambda c: c.train("adapter.layers=[]", recipe=_with_method(c, "ia3")), ["adapter.layers: an empty list"]),
    ("recipe-peft-layers-empty", lambda c: c.train("adapter.peft_type=lora", "adapter.layers_to_transform=[]", recipe=_with_method(c, "peft")),
     ["adapter.layers_to_transform: an empty list"]),
    ("recipe-peft-bool", lambda c: c.train("adapter.peft_type=lora", "adapter.r=true", recipe=_with_method(c, "peft")),
     ["adapter.r: expected an integer, not the boolean true"]),
    ("recipe-rank-pattern-bool", lambda c: c.train("adapter.rank_pattern={query: true}"), ["adapter.rank_pattern.query: expected an integer"]),
    ("recipe-labels-empty", lambda c: c.train("task.labels=[]"), ["task.labels: an empty list", "omit task.labels"]),
    ("recipe-generation-bool", lambda c: c.train("task.type=causal_lm", "task.generation.num_beams=true"),
     ["task.generation.num_beams: expected an integer, not the boolean true"]),
    ("recipe-seed-sexagesimal", lambda c: c.train("training.seed=1:30"), ["training.seed", "valid integer"]),
    ("recipe-seed-sexagesimal-yaml", lambda c: ["train", c.write(yaml.safe_dump(c.recipe()).replace("seed: 0", "seed: 1:30"))],
     ["training.seed", "valid integer"]),
    ("recipe-duplicate-section", lambda c: ["train", c.write(yaml.safe_dump(c.recipe()) + "training: {epochs: 1}\n")],
     ["r.yaml: line", "the key 'training' appears twice in one mapping"]),
    ("recipe-duplicate-key", lambda c: ["train", c.write(yaml.safe_dump(c.recipe()).replace("epochs: 2", "epochs: 2\n  epochs: 3"))],
     ["r.yaml: line", "the key 'epochs' appears twice"]),
    ("recipe-duplicate-key-set", lambda c: c.train("task.labels=[neg, pos]", "backbone.rope_scaling={rope_type: linear, factor: 2, factor: 4}"),
     ["--set backbone.rope_scaling: line 1: the key 'factor' appears twice"]),
    ("recipe-set-whole-section", lambda c: c.train("training={lr: 0.001}"),
     ["--set training: training is a section", "--set training.lr=0.001"]),
    ("recipe-set-whole-subsection", lambda c: c.train("training.early_stopping={patience: 2}"),
     ["--set training.early_stopping:", "--set training.early_stopping.patience=2"]),
    ("recipe-set-whole-head-settings", lambda c: c.train("task.type=causal_lm", "task.generation={max_new_tokens: 8}"),
     ["--set task.generation:", "--set task.generation.max_new_tokens=8"]),
    ("compare-samples-zero", lambda c: ["compare", _fake_run(c, "lora"), str(c.root), "--samples", "0"], ["--samples: 0", "100 to 100000"]),
    ("compare-samples-few", lambda c: ["compare", _fake_run(c, "lora"), str(c.root), "--samples", "5"], ["--samples: 5"]),
    ("export-verify-samples-zero", lambda c: ["export", _fake_run(c, "lora"), "--out", str(c.root / "e"), "--verify-samples", "0"],
     ["--verify-samples: 0", "positive"]),
    ("export-verify-samples-negative", lambda c: ["export", _fake_run(c, "lora"), "--out", str(c.root / "e"), "--verify-samples", "-4"],
     ["--verify-samples: -4"]),
    ("export-tolerance-nan", lambda c: ["export", _fake_run(c, "lora"), "--out", str(c.root / "e"), "--tolerance", "nan"], ["--tolerance: nan"]),
    ("merge-density-ignored", lambda c: ["merge", *_two_runs(c), "--out", str(c.root / "m"), "--density", "0.3"],
     ["--density: only used with --method ties, dare_linear, dare_ties, not linear"]),
    # --out where nothing can be created: `unexpected FileNotFoundError` once the work was done (issue #36, class 8)
    ("export-out-under-proc", lambda c: ["export", _fake_run(c, "lora"), "--out", _proc(c, "e")], ["--out: cannot write to /proc/no-such-folder/e"]),
    ("merge-out-under-proc", lambda c: ["merge", *_two_runs(c), "--out", _proc(c, "m")], ["--out: cannot write to /proc/no-such-folder/m"]),
    ("sweep-out-under-proc", lambda c: ["sweep", _fake_run(c, "lora"), "--out", _proc(c, "s")], ["--out: cannot write to /proc/no-such-folder/s"]),
    ("compare-out-under-proc", lambda c: ["compare", _fake_run(c, "lora"), str(c.root), "--out", _proc(c, "c")], ["--out: cannot write to /proc/no-such-folder/c"]),
    ("generate-out-under-proc", lambda c: ["generate", _fake_run(c, "lora"), "--prompt", "hi", "--out", _proc(c, "g.jsonl")],
     ["--out: cannot write to /proc/no-such-folder/g.jsonl"]),
    ("generate-file-out-under-proc", lambda c: ["generate", _fake_run(c, "lora"), "--file", c.file("p.jsonl", '{"prompt": "hi"}\n'), "--out", _proc(c, "g.jsonl")],
     ["--out: cannot write to /proc/no-such-folder/g.jsonl"]),
    ("tune-out-under-proc", lambda c: _tune(c, _proc(c, "t")), ["--out: cannot write to /proc/no-such-folder/t"]),
    ("tune-out-under-a-file", lambda c: _tune(c, str(Path(c.file("taken", "x")) / "t")), ["--out: cannot write to", "taken is a file, not a folder"]),
    ("tune-out-is-a-file", lambda c: _tune(c, c.file("taken", "x")), ["--out:", "taken is a file, not a folder"]),
    ("generate-out-under-a-file", lambda c: ["generate", _fake_run(c, "lora"), "--prompt", "hi", "--out", str(Path(c.file("taken", "x")) / "g.jsonl")],
     ["--out: cannot write to", "taken is a file, not a folder"]),
    ("train-output-dir-under-proc", lambda c: c.train(f"training.output_dir={_proc(c, 'run')}"), ["training.output_dir: cannot write to /proc/no-such-folder/run"]),
    ("predict-file-is-a-folder", lambda c: ["predict", _fake_run(c, "lora"), "--file", str(c.root)], ["--file:", "is a folder; give a text file"]),
    # a Hub revision is a name, never a path: huggingface_hub joins it to cache paths (`refs/../../x`)
    ("recipe-revision-parent-path", lambda c: c.train("backbone.revision=../../x"), ["backbone.revision: '../../x'", "a path, not a revision", "commit hash"]),
    ("recipe-revision-absolute-path", lambda c: ["train", c.write(dict(c.recipe(), backbone={"path": "org/model", "revision": "/etc"}))],
     ["r.yaml", "backbone.revision: '/etc' starts with '/'"]),
    ("recipe-revision-inner-parent", lambda c: ["data", "check", *c.train("backbone.revision=main/../../x")[1:]], ["backbone.revision", "contains '..'"]),
    ("recipe-revision-space", lambda c: c.train("backbone.revision=v 1"), ["backbone.revision: 'v 1'", "characters a git revision cannot have"]),
]





@pytest.mark.parametrize("case,build,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(case, build, expected, tiny_bert, tiny_llama, tmp_path, no_model):
    c = Ctx(tmp_path, tiny_bert, tiny_llama, lambda: pytest.fail("these cases need no trained run"))
    line = one_error_line(build(c))
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

def test_no_space_left_is_one_line(tmp_path, monkeypatch):
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
    line = one_error_line(["predict", str(tmp_path), "--text", "good film"])
    assert line.startswith(f"adapterkit: error: no space left on device writing {target}"), line
    assert list(tmp_path.iterdir()) == []


# ---- with a trained run (slow) ----

@pytest.mark.slow
def test_merge_with_nan_result_writes_nothing(trained_run, tmp_path, monkeypatch):  # noqa: F811
    merge_mod = importlib.import_module("adapterkit.interpolation.merge")  # the package re-exports a function of that name

    def poison(model, name):  # stands in for a combination that overflows
        with torch.no_grad():
            for n, p in model.named_parameters():
                if name in n.split("."):
                    p.fill_(float("nan"))

    monkeypatch.setattr(merge_mod, "_fix_rslora_scaling", poison)
    out = tmp_path / "merged"
    line = one_error_line(["merge", str(trained_run), str(trained_run), "--out", str(out), "--no-eval"])
    assert "combined adapter has NaN or inf values" in line and "nothing was written" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_merge_and_export_keep_a_users_tmp_folder(trained_run, tmp_path):  # noqa: F811
    for name in ("merged", "exported"):
        _user_folders(tmp_path, name)
    assert cli("merge", trained_run, trained_run, "--out", tmp_path / "merged", "--no-eval").code == 0
    assert cli("export", trained_run, "--out", tmp_path / "exported", "--format", "adapter", "--verify-samples", "4").code == 0
    assert cli("export", trained_run, "--out", tmp_path / "exported", "--format", "adapter", "--verify-samples", "4").code == 0  # replaces it
    assert (tmp_path / "merged" / "run.json").is_file() and (tmp_path / "exported" / "export_report.json").is_file()
    for name in ("merged", "exported"):
        for suffix in (".tmp", ".old"):
            assert (tmp_path / f"{name}{suffix}" / "mine.txt").read_text() == "the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "exported.old", "exported.tmp", "merged", "merged.old", "merged.tmp"]
