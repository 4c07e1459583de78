"""`adapterkit import-adapter` (issue #45): AdapterHub's own save format (tests/fixtures/adapterhub, written by
make_fixture.py in a venv with `adapters` 1.3.0) becomes a run folder whose logits equal AdapterHub's within 1e-5
for the Pfeiffer, Houlsby and parallel configs with their heads; predict and eval accept it; pickled weights, a
missing head and settings we cannot compute alike are one line, and nothing is written."""
import json
import shutil

import pytest
import torch

from helpers import ROOT, cli

FIXTURE = ROOT / "tests" / "fixtures" / "adapterhub"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


@pytest.mark.parametrize("config", ["pfeiffer", "houlsby", "parallel"])
def test_an_adapterhub_adapter_imports_to_a_run_with_adapterhubs_own_logits(config, tmp_path):
    from adapterkit.model import load_run

    out = tmp_path / "run"
    res = cli("import-adapter", FIXTURE / config, "--out", out, "--base", FIXTURE / "base")
    assert res.code == 0, res.err
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    run = load_run(out)
    ids = torch.tensor(EXPECTED["input_ids"])
    with torch.no_grad():
        got = run.model(input_ids=ids, attention_mask=(ids != 0).long()).logits
    want, without = torch.tensor(EXPECTED[config]), torch.tensor(EXPECTED[f"{config}_without_adapter"])
    assert (got - want).abs().max() < 1e-5
    assert (without - want).abs().max() > 0.1  # the adapter matters: the base alone gives other logits
    assert run.labels == (["a", "b", "c"] if config == "houlsby" else ["neg", "pos"])
    res = cli("predict", out, "--text", "w1 w2 w3", "--text", "w40 w7")
    assert res.code == 0, res.err
    assert [json.loads(line)["label"] in run.labels for line in res.out.splitlines()] == [True, True]


def _copy(tmp_path, config="pfeiffer"):
    folder = tmp_path / config
    shutil.copytree(FIXTURE / config, folder)
    return folder


def test_what_cannot_be_converted_is_one_line_and_writes_nothing(tmp_path):
    pickled = _copy(tmp_path / "p")
    (pickled / "adapter.safetensors").rename(pickled / "pytorch_adapter.bin")
    headless = _copy(tmp_path / "h")
    (headless / "head_config.json").unlink()
    gated = _copy(tmp_path / "g")
    cfg = json.loads((gated / "adapter_config.json").read_text())
    cfg["config"]["use_gating"] = True
    (gated / "adapter_config.json").write_text(json.dumps(cfg))
    learned = _copy(tmp_path / "l")
    cfg["config"].update(use_gating=False, scaling="learned")
    (learned / "adapter_config.json").write_text(json.dumps(cfg))
    cases = [
        (pickled, "pytorch_adapter.bin is a pickle, which adapterkit never loads"),
        (headless, "no head saved (save_adapter(..., with_head=True))"),
        (gated, "config.use_gating: True is not converted"),
        (learned, "config.scaling: 'learned' (learned scaling) is not converted"),
        (tmp_path / "nope", "no such folder"),
    ]
    for folder, expected in cases:
        out = tmp_path / f"out-{folder.name}"
        res = cli("import-adapter", folder, "--out", out, "--base", FIXTURE / "base")
        assert res.code == 2 and len(res.err_lines) == 1 and expected in res.err_lines[0], (folder, res.err)
        assert not out.exists()
