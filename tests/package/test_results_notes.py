"""Benchmark result files: a re-rendered table keeps the hand-written notes below the marker."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from _measure import NOTES, write_md  # noqa: E402


def test_rerender_keeps_notes_and_replaces_table(tmp_path):
    f = tmp_path / "r.md"
    write_md(f, "| old table |\n")
    f.write_text(f.read_text() + f"\n{NOTES} hand-written -->\nfinding 1\n")
    write_md(f, "| new table |\n")
    text = f.read_text()
    assert text.startswith("| new table |") and "old table" not in text
    assert text.endswith(f"{NOTES} hand-written -->\nfinding 1\n") and text.count(NOTES) == 1


def test_file_without_marker_is_replaced(tmp_path):
    f = tmp_path / "r.md"
    f.write_text("stale\n")
    write_md(f, "fresh\n")
    assert f.read_text() == "fresh\n"
