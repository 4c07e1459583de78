"""The package's shape, checked: functions stay short enough to read (the training loop is phases, not one
300-line function), and head kinds are capabilities on the records, not names compared across the code."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "adapterkit"
MAX_FUNCTION_LINES = 80


def test_no_function_is_over_80_lines():
    long = []
    for f in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{f.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


def test_the_causal_lm_name_appears_only_where_the_head_registers():
    found = [f"{f.relative_to(PACKAGE.parent)}:{n}" for f in sorted(PACKAGE.rglob("*.py"))
             for n, line in enumerate(f.read_text().splitlines(), 1) if '"causal_lm"' in line]
    assert len(found) == 1 and found[0].startswith("adapterkit/heads/lm.py"), found
