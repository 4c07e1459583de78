"""Bad input, table-driven: every case goes through the command line (`adapterkit.cli.main`, in process for speed;
one case also as a real subprocess) and must end with exit code 2 and exactly one stderr line that names the field
or file at fault. None of the recipe, model or data cases may load a model."""
import json
import shutil
from pathlib import Path

import pytest
import yaml

import adapterkit.deploy.artifacts  # noqa: F401  (import-time library chatter happens here, not inside a captured case)
import adapterkit.training.loop  # noqa: F401
from adapterkit.config import resolve_paths, save_recipe
from adapterkit.model import recipe_from_dict
from helpers import ROOT, cli_process, one_error_line, tiny_recipe, write_sentiment


class Ctx:
    """Files for one case: recipes, data files and copies of a trained run, under a fresh folder."""

    def __init__(self, root: Path, tiny_bert: Path, tiny_llama: Path, trained_run):
        self.root, self.bert, self.llama, self._trained_run = root, tiny_bert, tiny_llama, trained_run
        self.data = write_sentiment(root)

    @property
    def run(self) -> Path:
        """A trained run, trained on first use (the cases that need one are marked slow)."""
        return self._trained_run()

    def recipe(self, **sections) -> dict:
        return tiny_recipe(self.bert, self.data, self.root / "out", **sections)

    def write(self, data, name="r.yaml") -> str:
        p = self.root / name
        p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
        return str(p)

    def train(self, *overrides, recipe=None, extra=()) -> list[str]:
        argv = ["train", self.write(recipe or self.recipe())]
        for o in overrides:
            argv += ["--set", o]
        return argv + list(extra)

    def file(self, name, text) -> str:
        p = self.root / name
        p.write_text(text)
        return str(p)

    def model_dir(self, name, files: dict) -> str:
        d = self.root / name
        d.mkdir()
        for k, v in files.items():
            (d / k).write_text(v)
        return str(d)

    def run_copy(self, edit=None) -> str:
        d = self.root / "run_copy"
        shutil.copytree(self.run, d)
        if edit:
            edit(d)
        return str(d)


def _truncate(path: Path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _rebase(run: Path, model: Path):
    r = yaml.safe_load((run / "recipe.yaml").read_text())
    r["backbone"]["path"] = str(model)
    (run / "recipe.yaml").write_text(yaml.safe_dump(r))


def _fake_run(c: Ctx, method: str) -> str:
    d = c.root / "fake_run"
    d.mkdir()
    save_recipe(recipe_from_dict(_with_method(c, method)), d / "recipe.yaml")
    return str(d)


def _with_method(c: Ctx, method: str) -> dict:
    r = c.recipe()
    r["adapter"] = {"method": method}
    return r


def _pickle_model(c: Ctx) -> str:
    d = c.root / "pickled"
    d.mkdir()
    shutil.copy(c.bert / "config.json", d / "config.json")
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")  # never opened: refused by name
    return str(d)


def _model_copy(c: Ctx, name: str, drop=(), edit=None) -> str:
    """A copy of the tiny BERT folder without the files in `drop`, then `edit(folder)`."""
    d = c.root / name
    shutil.copytree(c.bert, d, ignore=shutil.ignore_patterns(*drop) if drop else None)
    if edit:
        edit(d)
    return str(d)


def _foreign_out(c: Ctx) -> str:
    d = c.root / "mine"
    (d / "checkpoints").mkdir(parents=True)
    (d / "checkpoints" / "notes.txt").write_text("the user's own file")
    (d / "data.csv").write_text("x")
    return str(d)


def _unfinished(d: Path, status: str):
    info = json.loads((d / "run.json").read_text())
    (d / "run.json").write_text(json.dumps(dict(info, status=status)))


def _vit_dir(c: Ctx) -> str:
    from transformers import ViTConfig

    d = c.root / "vit"
    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(d)
    return str(d)


def _conll(c: Ctx) -> list[str]:
    path = c.file("train.txt", "EU NNP B-ORG\nrejects VBZ O\nGerman JJ\n\nPeter NNP B-PER\n")
    r = c.recipe(task={"type": "token_classification"})
    r["data"] = {"train": path, "max_length": 32}
    return c.train(recipe=r)


def _one_label(c: Ctx) -> list[str]:
    return c.train(f"data.train={c.file('one.csv', 'text,label' + chr(10) + 'good film,pos' + chr(10) + 'fine film,pos' + chr(10))}",
                   "data.validation=null")


def _empty_parquet(c: Ctx) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.string())}), c.root / "empty.parquet")
    return str(c.root / "empty.parquet")


def _empty_arrow(c: Ctx) -> str:
    import pyarrow as pa

    t = pa.table({"text": pa.array([], pa.string()), "label": pa.array([], pa.string())})
    with pa.OSFile(str(c.root / "empty.arrow"), "wb") as sink, pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    return str(c.root / "empty.arrow")


def _empty_disk(c: Ctx) -> str:
    import datasets

    datasets.Dataset.from_dict({"text": [], "label": []}).save_to_disk(str(c.root / "empty_disk"))  # saved without an Arrow file
    return str(c.root / "empty_disk")


def _disk_splits_one_empty(c: Ctx) -> list[str]:
    import datasets

    full = datasets.Dataset.from_dict({"text": ["good film", "bad film"], "label": ["pos", "neg"]})
    datasets.DatasetDict({"train": full, "validation": full.select([])}).save_to_disk(str(c.root / "splits"))
    return c.train("data.format=disk", f"data.name={c.root / 'splits'}", "data.train=train", "data.validation=validation")


# (case id, argv builder, substrings the single error line must contain)
CASES = [
    # ---- recipe ----
    ("recipe-missing-file", lambda c: ["train", str(c.root / "nope.yaml")], ["recipe file not found", "nope.yaml"]),
    ("recipe-invalid-yaml", lambda c: ["train", c.write("backbone: {path: x\ntraining: [")], ["r.yaml", "not valid YAML at line"]),
    ("recipe-not-a-mapping", lambda c: ["train", c.write("- backbone\n- training\n")], ["r.yaml", "expected a mapping of sections"]),
    ("recipe-missing-section", lambda c: c.train(recipe={"training": {"epochs": 1}}), ["backbone: required key is missing"]),
    ("recipe-unknown-section", lambda c: c.train(recipe=dict(c.recipe(), trainer={"lr": 1})), ["trainer: unknown key"]),
    ("recipe-unknown-key", lambda c: c.train("training.lrr=1"), ["training.lrr: unknown key"]),
    ("recipe-wrong-type", lambda c: c.train("training.batch_size=big"), ["training.batch_size", "valid integer"]),
    ("recipe-negative-lr", lambda c: c.train("training.lr=-1"), ["training.lr", "greater than 0"]),
    ("recipe-warmup-out-of-range", lambda c: c.train("training.warmup_ratio=1.5"), ["training.warmup_ratio", "less than 1"]),
    ("recipe-bad-quantization", lambda c: c.train("backbone.quantization=int4"), ["backbone.quantization", "'int8'"]),
    ("recipe-bad-bool", lambda c: c.train("backbone.trust_remote_code=maybe"), ["backbone.trust_remote_code", "boolean"]),
    ("recipe-unknown-method", lambda c: c.train("adapter.method=lorax"), ["adapter", "unknown adapter method 'lorax'"]),
    ("recipe-unknown-method-setting", lambda c: c.train("adapter.rank=4"), ["adapter.rank: unknown key"]),
    ("recipe-lora-rank-zero", lambda c: c.train("adapter.r=0"), ["adapter.r", "greater than 0"]),
    ("recipe-unknown-task", lambda c: c.train("task.type=summarize"), ["task", "unknown task type 'summarize'"]),
    ("recipe-full-on-int8", lambda c: c.train("backbone.quantization=int8", recipe=_with_method(c, "full")),
     ["adapter.method: full fine-tuning needs backbone.quantization: none"]),
    ("recipe-bad-set-syntax", lambda c: c.train("training.lr"), ["--set 'training.lr'", "KEY=VALUE"]),
    ("recipe-unknown-selection-metric", lambda c: c.train("training.early_stopping.metric=auc"), ["training.early_stopping.metric", "'auc'", "accuracy"]),
    ("recipe-no-train-file", lambda c: c.train("data.train=null"), ["data.train: no training file given"]),
    # ---- model path ----
    ("model-missing", lambda c: c.train("backbone.path=/nonexistent/model"), ["backbone.path: /nonexistent/model is not a folder"]),
    ("model-not-a-model", lambda c: c.train(f"backbone.path={c.model_dir('notes', {'README.md': 'hi'})}"), ["backbone.path", "has no config.json"]),
    ("model-corrupt-config", lambda c: c.train(f"backbone.path={c.model_dir('broken', {'config.json': '{not json'})}"),
     ["backbone.path", "cannot read the model config"]),
    ("model-pickle-weights-only", lambda c: c.train(f"backbone.path={_pickle_model(c)}"),
     ["backbone.path", "has no model.safetensors weights (found ['pytorch_model.bin'])", "save_pretrained"]),
    ("model-unsupported-architecture", lambda c: c.train(f"backbone.path={_vit_dir(c)}"),
     ["backbone.path", "(vit) has no AutoModelForSequenceClassification"]),
    ("model-missing-target-modules", lambda c: c.train("adapter.target_modules=[qkv_proj, query]"),
     ["adapter.target_modules: ['qkv_proj'] not found", "'query'", "'value'"]),
    ("model-package-not-installed", lambda c: c.train("backbone.path=package:no_such_model_pkg"), ["backbone.path: package 'no_such_model_pkg' is not installed"]),
    ("model-no-tokenizer", lambda c: c.train(f"backbone.path={_model_copy(c, 'notok', ('tokenizer*', 'vocab.txt', 'special_tokens_map.json'))}"),
     ["backbone.path", "has no tokenizer files", "vocab.txt"]),
    ("model-truncated-weights", lambda c: c.train(f"backbone.path={_model_copy(c, 'trunc', edit=lambda d: _truncate(d / 'model.safetensors'))}"),
     ["model.safetensors: backbone weights are corrupted or truncated"]),
    ("model-max-length-above-positions", lambda c: c.train("data.max_length=4096"), ["data.max_length: 4096 is more than the 128 positions"]),
    ("model-gguf-file-missing", lambda c: c.train("backbone.gguf_file=model.Q4.gguf"), ["backbone.gguf_file: model.Q4.gguf not found"]),
    # ---- data ----
    ("data-missing-file", lambda c: c.train("data.train=/nonexistent/train.csv"), ["data.train: file not found: /nonexistent/train.csv"]),
    ("data-unknown-extension", lambda c: c.train(f"data.train={c.file('train.xlsx', 'a,b')}"), ["data.format", "train.xlsx"]),
    ("data-wrong-format", lambda c: c.train("data.format=jsonl"), ["data.train", "train.csv line 1 is not valid JSON"]),
    ("data-missing-text-column", lambda c: c.train("data.text_column=sentence"), ["data.text_column: column 'sentence' not in", "train.csv"]),
    ("data-missing-label-column", lambda c: c.train("data.label_column=sentiment"), ["data.label_column: column 'sentiment' not in"]),
    ("data-missing-pair-column", lambda c: c.train("data.text_pair_column=hypothesis"), ["data.text_pair_column: column 'hypothesis' not in"]),
    ("data-empty-file", lambda c: c.train(f"data.train={c.file('empty.csv', '')}"), ["data.train", "empty.csv is empty"]),
    ("data-empty-parquet", lambda c: c.train(f"data.train={_empty_parquet(c)}"), ["data.train", "empty.parquet has a header but no rows"]),
    ("data-zero-byte-parquet", lambda c: c.train(f"data.validation={c.file('v.parquet', '')}"), ["data.validation", "v.parquet is empty"]),
    ("data-not-parquet", lambda c: c.train(f"data.train={c.file('t.parquet', 'text,label')}"), ["data.train", "cannot read", "t.parquet as parquet"]),
    ("data-empty-arrow", lambda c: c.train(f"data.train={_empty_arrow(c)}"), ["data.train", "empty.arrow has a header but no rows"]),
    ("data-empty-disk-dataset", lambda c: c.train(f"data.validation={_empty_disk(c)}"), ["data.validation", "empty_disk has a header but no rows"]),
    ("data-disk-format-for-a-file", lambda c: c.train("data.format=disk"), ["data.train", "train.csv is a file, not a `save_to_disk` folder"]),
    ("data-empty-disk-split", _disk_splits_one_empty, ["data.validation", "splits[validation] has a header but no rows"]),
    ("data-empty-split", lambda c: c.train(f"data.validation={c.file('val.csv', 'text,label' + chr(10))}"),
     ["data.validation", "val.csv has a header but no rows"]),
    ("data-ragged-csv", lambda c: c.train(f"data.train={c.file('rag.csv', 'text,label' + chr(10) + 'ok,pos' + chr(10) + 'a,b,neg' + chr(10))}"),
     ["data.train", "rag.csv line 3 has a different number of fields"]),
    ("data-bad-jsonl", lambda c: c.train(f"data.train={c.file('t.jsonl', json.dumps({'text': 'a', 'label': 'pos'}) + chr(10) + '{oops' + chr(10))}"),
     ["data.train", "t.jsonl line 2 is not valid JSON"]),
    ("data-unknown-label", lambda c: c.train(f"data.validation={c.file('val.csv', 'text,label' + chr(10) + 'so so,maybe' + chr(10) + 'great,pos' + chr(10))}"),
     ["data.validation", "['maybe']", "val.csv"]),
    ("data-label-not-in-task-labels", lambda c: c.train("task.labels=[neg, neutral]"), ["data.train", "['pos']", "task.labels"]),
    ("data-ragged-conll", _conll, ["data.train", "train.txt line 3 has 2 columns, expected 3"]),
    ("data-single-label", _one_label, ["data.label_column", "one.csv has only 1 distinct label"]),
    ("data-empty-text", lambda c: c.train(f"data.train={c.file('et.csv', 'text,label' + chr(10) + 'good,pos' + chr(10) + ',neg' + chr(10))}",
                                          "data.validation=null"), ["data.text_column: row 2", "et.csv", "empty 'text'"]),
    # ---- output directory and checkpoints ----
    ("out-finished-run", lambda c: c.train(f"training.output_dir={c.run}"), ["training.output_dir", "holds a finished run", "training.overwrite=true"]),
    ("out-is-a-file", lambda c: c.train(f"training.output_dir={c.file('taken', 'x')}"), ["training.output_dir: cannot write to", "taken"]),
    ("out-not-a-run", lambda c: c.train(f"training.output_dir={_foreign_out(c)}"),
     ["training.output_dir", "is not empty and is not an adapterkit run", "'checkpoints'", "'data.csv'"]),
    ("resume-without-checkpoint", lambda c: c.train(extra=["--resume"]), ["--resume: no checkpoint in", "checkpoints"]),
    # ---- run directories and adapter files ----
    ("run-not-a-run", lambda c: ["eval", str(c.root)], ["not a finished adapterkit run", "recipe.yaml missing"]),
    ("run-corrupted-adapter", lambda c: ["eval", c.run_copy(lambda d: (d / "adapter" / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 10))],
     ["adapter_model.safetensors: adapter weights are corrupted or truncated"]),
    ("run-truncated-head", lambda c: ["eval", c.run_copy(lambda d: _truncate(d / "head.safetensors"))], ["head.safetensors: head weights are corrupted or truncated"]),
    ("run-unfinished", lambda c: ["eval", c.run_copy(lambda d: _unfinished(d, "running"))], ["the run is running, not finished"]),
    ("run-interrupted", lambda c: ["export", c.run_copy(lambda d: _unfinished(d, "interrupted")), "--out", str(c.root / "e")],
     ["the run is interrupted, not finished", "--resume"]),
    ("run-labels-do-not-fit-head", lambda c: ["predict", c.run_copy(lambda d: (d / "labels.json").write_text(json.dumps({"labels": ["a", "b", "c"]}))), "--text", "good"],
     ["labels.json: 3 labels do not fit head.safetensors", "different trainings"]),
    ("run-adapter-for-another-model", lambda c: ["eval", c.run_copy(lambda d: _rebase(d, c.llama))], ["adapter", "cannot apply this adapter to", "tiny_llama"]),
    ("export-bad-format", lambda c: ["export", str(c.run), "--out", str(c.root / "e"), "--format", "tflite"], ["--format: 'tflite'", "merged, adapter, onnx, gguf or gguf-lora", "several runs: bundle or onnx-adapter"]),
    ("export-merge-non-mergeable", lambda c: ["export", _fake_run(c, "bottleneck"), "--out", str(c.root / "e")],
     ["adapter method 'bottleneck'", "cannot be merged", "--format adapter"]),
    ("export-adapter-of-full", lambda c: ["export", _fake_run(c, "full"), "--out", str(c.root / "e"), "--format", "adapter"],
     ["a full fine-tuning run has no adapter", "--format merged"]),
]


@pytest.fixture(scope="module")
def trained_run(tiny_bert, tmp_path_factory) -> Path:
    from adapterkit.training import train

    d = tmp_path_factory.mktemp("bad_inputs_run")
    files = write_sentiment(d, n_train=16, n_val=8)
    train(resolve_paths(recipe_from_dict(tiny_recipe(tiny_bert, files, d / "run", training={"epochs": 1}))))
    return d / "run"


NEEDS_RUN = {"run-unfinished", "run-interrupted", "run-labels-do-not-fit-head", "out-finished-run", "run-corrupted-adapter", "run-truncated-head", "run-adapter-for-another-model", "export-bad-format"}


@pytest.mark.parametrize("case,build,expected", [pytest.param(*c, marks=pytest.mark.slow) if c[0] in NEEDS_RUN else c for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(case, build, expected, tiny_bert, tiny_llama, request, tmp_path, monkeypatch):
    c = Ctx(tmp_path, tiny_bert, tiny_llama, lambda: request.getfixturevalue("trained_run"))
    argv = build(c)
    if not case.startswith("run-") and not case.startswith("export-"):
        request.getfixturevalue("no_model")
    line = one_error_line(argv)
    for s in expected:
        assert s in line, f"{s!r} not in {line!r}"


def test_table_is_large_enough():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


def test_bad_input_through_a_real_process(tiny_bert, tmp_path):
    c = Ctx(tmp_path, tiny_bert, tiny_bert, tmp_path)
    res = cli_process(*c.train(f"backbone.path={_vit_dir(c)}"), cwd=ROOT)
    err = [l for l in res.stderr.splitlines() if l.strip()]
    assert res.returncode == 2 and len(err) == 1 and "(vit) has no AutoModelForSequenceClassification" in err[0], res.stderr
