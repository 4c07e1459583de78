"""Typed final results: a single-task and a multi-task metrics.json read as one shape (a single-task run is one task
named `main`), used by a search's objective, the --seeds/--cv summary and the report."""
from adapterkit.runs.report import _metrics_table
from adapterkit.runs.results import MAIN, RunResult
from adapterkit.training.layout import selection

SINGLE = {"validation": {"loss": 0.5, "accuracy": 0.8, "report": "text", "per_entity": {"PER": {"f1": 0.7}}},
          "test": {"loss": 0.6, "accuracy": 0.75}, "train": {"steps": 10, "best_step": 8},
          "selection": {"weights": "best step 8"}, "timings": {"training": 1.5}, "warnings": ["w"]}
MULTI = {"tasks": {"sst2": {"validation": {"loss": 0.4, "accuracy": 0.9}, "train": {"batches": 6}},
                   "ner": {"validation": {"loss": 0.7, "f1": 0.6}, "test": {"f1": 0.5}, "train": {"batches": 4}}},
         "train": {"steps": 10}, "summary": {"sst2": {"accuracy": 0.9}, "ner": {"f1": 0.6}}}


def test_single_and_multi_task_metrics_read_as_one_shape():
    one, many = RunResult.from_metrics(SINGLE), RunResult.from_metrics(MULTI)
    assert not one.multi and list(one.tasks) == [MAIN] and many.multi and list(many.tasks) == ["sst2", "ner"]
    assert one.split("validation") == {MAIN: SINGLE["validation"]}
    assert many.split("test") == {"ner": {"f1": 0.5}}  # only the tasks evaluated on that split
    assert one.tasks[MAIN].metric("test", "accuracy") == 0.75 and one.tasks[MAIN].metric("validation", "report") is None
    assert many.tasks["ner"].batches == 4 and one.tasks[MAIN].selection == {"weights": "best step 8"}
    assert one.warnings == ("w",) and one.train["best_step"] == 8


def test_numbers_are_the_keys_a_summary_averages():
    assert RunResult.from_metrics(SINGLE).numbers() == {
        "validation/loss": 0.5, "validation/accuracy": 0.8, "validation/per_entity/PER/f1": 0.7, "test/loss": 0.6,
        "test/accuracy": 0.75, "train/steps": 10, "train/best_step": 8, "timings/training": 1.5}
    multi = RunResult.from_metrics(MULTI).numbers()
    assert multi["sst2/validation/accuracy"] == 0.9 and multi["ner/test/f1"] == 0.5 and "summary/sst2/accuracy" not in multi


def test_a_search_selects_on_either_shape():
    from adapterkit.tuning.study import _final_value

    assert _final_value(SINGLE, "accuracy") == 0.8
    assert _final_value(MULTI, "sst2/accuracy") == selection(RunResult.from_metrics(MULTI).split(), "sst2/accuracy", True) == 0.9


def test_the_report_table_has_a_row_per_task_and_split():
    html = _metrics_table(MULTI)
    assert "<th>sst2 validation</th>" in html and "<th>ner test</th>" in html and "<th>f1</th>" in html
    assert "<th>validation</th>" in _metrics_table(SINGLE)
