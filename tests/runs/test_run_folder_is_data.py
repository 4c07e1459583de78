"""A run folder is data: someone else's run cannot make eval/predict/export/... import a module or run model code,
its parts must be the ones training recorded, and an export never deletes a file it did not write."""
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from adapterkit.config import resolve_paths
from adapterkit.model import recipe_from_dict
from helpers import cli, cli_process, tiny_recipe, write_sentiment

pytestmark = pytest.mark.slow

EVIL = "from pathlib import Path\nPath({marker!r}).write_text('code ran')\n"


@pytest.fixture(scope="module")
def run(tiny_bert, tmp_path_factory) -> Path:
    from adapterkit.training import train

    d = tmp_path_factory.mktemp("data_run")
    files = write_sentiment(d, n_train=16, n_val=8)
    train(resolve_paths(recipe_from_dict(tiny_recipe(tiny_bert, files, d / "run", training={"epochs": 1}))))
    return d / "run"


def _copy(run: Path, dst: Path, recipe_edit=None) -> Path:
    shutil.copytree(run, dst)
    if recipe_edit:
        r = yaml.safe_load((dst / "recipe.yaml").read_text())
        recipe_edit(r)
        (dst / "recipe.yaml").write_text(yaml.safe_dump(r))
    return dst


def _commands(run: Path, tmp: Path) -> dict[str, list[str]]:
    return {"eval": ["eval", str(run)], "predict": ["predict", str(run), "--text", "hi"],
            "export": ["export", str(run), "--out", str(tmp / "export")], "sweep": ["sweep", str(run), "--scales", "0,1"],
            "compare": ["compare", str(run), str(run)], "merge": ["merge", str(run), str(run), "--out", str(tmp / "merged")],
            "generate": ["generate", str(run), "--prompt", "hi"]}


def test_a_plugin_named_in_a_run_folder_is_never_imported(run, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    (tmp_path / "evil_plugin.py").write_text(EVIL.format(marker=str(marker)))
    monkeypatch.chdir(tmp_path)  # the plugin is importable from here, as a module beside recipes is
    bad = _copy(run, tmp_path / "bad", lambda r: r["task"].update(plugin="evil_plugin"))
    for name, argv in _commands(bad, tmp_path).items():
        res = cli(*argv)
        lines = res.err_lines
        assert res.code == 2 and len(lines) == 1, (name, res.err)
        assert "task.plugin" in lines[0] and "--plugin evil_plugin" in lines[0], (name, lines[0])
        assert not marker.exists(), f"{name} imported the run folder's plugin"
    assert not (tmp_path / "export").exists() and not (tmp_path / "merged").exists()
    # Asked for on the command line, the same plugin is imported and the run scores.
    res = cli("eval", str(bad), "--plugin", "evil_plugin")
    assert res.code == 0, res.err
    assert marker.exists()


def test_remote_code_named_in_a_run_folder_never_runs(run, tiny_bert, tmp_path):
    """Through a real process, as an attacker's run would be used: nothing runs and no marker file appears."""
    marker = tmp_path / "marker"
    model = tmp_path / "model_with_code"
    shutil.copytree(tiny_bert, model)
    (model / "configuration_evil.py").write_text(EVIL.format(marker=str(marker)) +
                                                 "from transformers import BertConfig\nclass EvilConfig(BertConfig):\n    model_type = 'bert'\n")
    cfg = json.loads((model / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig"}
    (model / "config.json").write_text(json.dumps(cfg))

    def edit(r):
        r["backbone"].update(path=str(model), trust_remote_code=True, quantization="none")

    bad = _copy(run, tmp_path / "bad", edit)
    for argv in (["predict", str(bad), "--text", "hi"], ["export", str(bad), "--out", str(tmp_path / "e")]):
        res = cli_process(*argv, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
        lines = [l for l in res.stderr.splitlines() if l.strip()]
        assert res.returncode == 2 and len(lines) == 1, res.stderr
        assert "backbone.trust_remote_code" in lines[0] and "--trust-remote-code" in lines[0], lines[0]
        assert not marker.exists(), "model code from a run folder ran"


def _swap_labels(d: Path):
    labels = json.loads((d / "labels.json").read_text())["labels"]
    (d / "labels.json").write_text(json.dumps({"labels": labels[::-1]}))


def _other_head(d: Path):
    state = load_file(d / "head.safetensors")
    save_file({k: (v + 0.5).contiguous() for k, v in state.items()}, str(d / "head.safetensors"))  # same shapes, valid file


def _other_adapter(d: Path):
    f = d / "adapter" / "adapter_model.safetensors"
    state = load_file(f)
    save_file({k: (v * 2).contiguous() for k, v in state.items()}, str(f))


def _drop_tokenizer_file(d: Path):
    f = next(p for p in sorted((d / "tokenizer").iterdir()) if p.is_file())
    f.unlink()


@pytest.mark.parametrize("edit,names", [(_swap_labels, "labels.json"), (_other_head, "head.safetensors"),
                                        (_other_adapter, "adapter_model.safetensors"), (_drop_tokenizer_file, "tokenizer")])
def test_parts_that_disagree_are_refused_naming_the_file(run, tmp_path, edit, names):
    info = json.loads((run / "run.json").read_text())
    assert set(info["identity"]["sha256"]) >= {"labels.json", "head.safetensors", "adapter/adapter_model.safetensors"}
    assert info["identity"]["labels"] == json.loads((run / "labels.json").read_text())["labels"]
    bad = _copy(run, tmp_path / "bad")
    edit(bad)
    for argv in (["eval", str(bad)], ["predict", str(bad), "--text", "good"], ["compare", str(bad), str(run)]):
        res = cli(*argv)
        lines = res.err_lines
        assert res.code == 2 and len(lines) == 1 and names in lines[0], (argv[0], res.err)
    assert cli("eval", str(run)).code == 0  # the untouched run still scores


def test_warm_start_from_a_run_with_swapped_labels_is_refused(run, tmp_path):
    from adapterkit.errors import RunDirError
    from adapterkit.model import warmstart

    bad = _copy(run, tmp_path / "bad")
    _swap_labels(bad)
    with pytest.raises(RunDirError, match="labels.json"):
        warmstart.resolve(str(bad))


def test_export_never_deletes_a_file_it_did_not_write(run, tmp_path):
    out = tmp_path / "folder"
    out.mkdir()
    (out / "export_report.json").write_text("{}")
    (out / "my_notes.txt").write_text("mine")
    res = cli("export", str(run), "--out", str(out))
    assert res.code == 2 and "my_notes.txt" in res.err and "--out" in res.err, res.err
    assert (out / "my_notes.txt").read_text() == "mine" and (out / "export_report.json").read_text() == "{}"
    # A real export, then a user's file beside it: replacing the export is refused too.
    fresh = tmp_path / "fresh"
    assert cli("export", str(run), "--out", str(fresh)).code == 0
    (fresh / "notes").mkdir()
    res = cli("export", str(run), "--out", str(fresh))
    assert res.code == 2 and "notes/" in res.err, res.err
    assert (fresh / "notes").is_dir()
    shutil.rmtree(fresh / "notes")
    assert cli("export", str(run), "--out", str(fresh)).code == 0  # its own files alone: replaced


PLUGIN_FORMAT = '''
import json, shutil

from adapterkit.deploy import ExportFormat, register_format


def write(run, tmp, options):
    # The head alone, for a serving stack that keeps its own base model.
    shutil.copy2(run / "head.safetensors", tmp / "head.safetensors")
    shutil.copy2(run / "labels.json", tmp / "labels.json")
    return {"format": "head-only", "run": str(run), "dtype": options.dtype}


register_format(ExportFormat("head-only", write, description="the trained head and label map"))
'''


def test_a_plugin_export_format_works_end_to_end(run, tmp_path, monkeypatch):
    (tmp_path / "head_only_format.py").write_text(PLUGIN_FORMAT)
    monkeypatch.chdir(tmp_path)
    res = cli("export", str(run), "--out", str(tmp_path / "x"), "--format", "head-only")
    assert res.code == 2 and "--format: 'head-only'" in res.err and "merged, adapter, onnx, gguf or gguf-lora" in res.err, res.err
    out = tmp_path / "h"
    res = cli("export", str(run), "--out", str(out), "--format", "head-only", "--plugin", "head_only_format")
    assert res.code == 0, res.err
    report = json.loads((out / "export_report.json").read_text())
    assert report["format"] == "head-only" and set(report["files"]) == {"head.safetensors", "labels.json"}
    assert load_file(out / "head.safetensors").keys() == load_file(run / "head.safetensors").keys()
    from adapterkit.deploy import FORMATS

    FORMATS.pop("head-only")
