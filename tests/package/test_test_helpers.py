"""The tests' own rules (issue #37): one helpers module, imported one way (`from helpers import ...`; conftest.py holds
fixtures and hooks and no test imports it), and one way to run the command line (helpers.cli in this process,
helpers.cli_process / cli_start as a real process): no test spells `-m adapterkit.cli` or calls
`adapterkit.cli.main` itself."""
import ast
import os
import re
import sys
from pathlib import Path

from helpers import CLI_MODULE, cli, cli_command, cli_process, tiny_recipe

TESTS = Path(__file__).resolve().parents[1]
FILES = sorted(p for p in TESTS.rglob("*.py") if p.name not in ("helpers.py", "conftest.py"))
# `-m adapterkit.cli` as an argv spells it: two quoted items, any quotes and spacing, in a list or a tuple
RUNS_THE_CLI = re.compile(r"""["']-m["']\s*,\s*["']adapterkit\.cli["']""")


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name, None) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield from ((node.lineno, node.module, a.name) for a in node.names)


def test_the_rules_see_the_test_files():
    assert len(FILES) > 40 and TESTS / "package" / "test_test_helpers.py" in FILES


def test_helpers_are_imported_one_way():
    bad = [f"{p.relative_to(TESTS)}:{line}: {module}" for p in FILES for line, module, _ in _imports(p)
           if module in ("conftest", "tests") or module.startswith("tests.")]
    assert not bad, "import them as `from helpers import ...` (conftest.py holds fixtures only):\n" + "\n".join(bad)


def test_the_command_line_runs_through_helpers_only():
    bad = [f"{p.relative_to(TESTS)}:{n}" for p in FILES for n, line in enumerate(p.read_text().splitlines(), 1)
           if RUNS_THE_CLI.search(line)]
    assert not bad, "run adapterkit with helpers.cli_process / cli_start (launcher=...):\n" + "\n".join(bad)
    bad = [f"{p.relative_to(TESTS)}:{line}" for p in FILES for line, module, name in _imports(p)
           if module == "adapterkit.cli" and name == "main"]
    assert not bad, "run adapterkit in this process with helpers.cli, not adapterkit.cli.main:\n" + "\n".join(bad)


def test_the_rule_catches_what_it_names():
    module = "adapterkit" + ".cli"  # spelled in two parts: this file is checked by the rule too
    assert RUNS_THE_CLI.search(f'[sys.executable, "-m", "{module}", "train"]')
    assert RUNS_THE_CLI.search(f"('-m','{module}')")
    assert not RUNS_THE_CLI.search('[sys.executable, "-m", "adapterkit.docs", "--check"]')
    argv = cli_command("train", Path("r.yaml"), launcher=["accelerate", "launch"])
    assert argv == ["accelerate", "launch", *CLI_MODULE, "train", "r.yaml"]


def test_cli_captures_output_and_the_exit_code(tmp_path):
    res = cli("eval", tmp_path / "nope")
    assert res.code == 2 and res.out == "" and len(res.err_lines) == 1, res
    assert res.err_lines[0].startswith("adapterkit: error: "), res
    assert cli("--help").code == 0 and "train" in cli("--help").out


def test_tiny_recipe_merges_sections_and_replaces_on_request():
    files = {"train": "t.csv", "validation": "v.csv"}
    merged = tiny_recipe("m", files, "out", adapter={"dropout": 0.1})
    assert merged["adapter"] == {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.1}
    replaced = tiny_recipe("m", files, "out", replace={"adapter": {"method": "ia3"}}, training={"epochs": 1})
    assert replaced["adapter"] == {"method": "ia3"}
    assert replaced["training"]["epochs"] == 1 and replaced["training"]["lr"] == 5e-3


def test_a_process_gets_this_environment_with_the_overrides(monkeypatch):
    """`env` sets variables over this process's environment, None removes one; the launcher replaces this Python."""
    monkeypatch.setenv("ADAPTERKIT_HELPERS_PROBE", "inherited")
    monkeypatch.setenv("ADAPTERKIT_HELPERS_GONE", "x")
    show = ["-c", "import os; print(*(os.environ.get(f'ADAPTERKIT_HELPERS_{k}') for k in ('PROBE', 'GONE')))"]
    # `python -c CODE -m adapterkit.cli ARGV`: CODE runs with the rest as its arguments (adapterkit itself never starts)
    res = cli_process("ignored", launcher=[sys.executable, *show], env={"ADAPTERKIT_HELPERS_GONE": None})
    assert res.returncode == 0 and res.stdout.split() == ["inherited", "None"], res.stderr
    res = cli_process("ignored", launcher=[sys.executable, *show], env={"ADAPTERKIT_HELPERS_PROBE": "set"})
    assert res.stdout.split() == ["set", "x"] and os.environ["ADAPTERKIT_HELPERS_PROBE"] == "inherited"
