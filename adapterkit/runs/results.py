"""A run's final metrics as typed records, one shape for single- and multi-task runs: a single-task run is one task
named `main`. metrics.json keeps its documented layout (a single-task run's splits at the top, a multi-task run's
under `tasks`); `RunResult.from_metrics` reads either, so a search, a --seeds/--cv summary and the report ask the
record, not the layout."""

from __future__ import annotations

from dataclasses import dataclass, field

MAIN = "main"
# Keys of a single-task metrics.json that are not evaluated splits.
NOT_SPLITS = ("train", "timings", "peak_rss_mib", "selection", "warnings", "summary", "tasks")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class TaskResult:
    """One task's final metrics by split (`validation`, `test`): numbers, and structured extras such as seqeval's
    per-entity scores."""

    name: str
    splits: dict[str, dict] = field(default_factory=dict)
    batches: int | None = None  # multi-task: the batches this task trained on
    selection: dict = field(default_factory=dict)  # which weights, and the headline (single-task runs)

    def metric(self, split: str, name: str) -> float | None:
        v = self.splits.get(split, {}).get(name)
        return v if _number(v) else None


@dataclass(frozen=True)
class RunResult:
    tasks: dict[str, TaskResult]
    multi: bool
    train: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    timings: dict = field(default_factory=dict)

    @classmethod
    def from_metrics(cls, final: dict) -> RunResult:
        common: dict = dict(
            train=dict(final.get("train") or {}),
            warnings=tuple(final.get("warnings") or ()),
            timings=dict(final.get("timings") or {}),
        )
        if isinstance(final.get("tasks"), dict):
            tasks = {
                n: TaskResult(
                    n,
                    {s: m for s, m in t.items() if s != "train" and isinstance(m, dict)},
                    (t.get("train") or {}).get("batches"),
                )
                for n, t in final["tasks"].items()
            }
            return cls(tasks, True, **common)
        splits = {s: m for s, m in final.items() if s not in NOT_SPLITS and isinstance(m, dict)}
        return cls({MAIN: TaskResult(MAIN, splits, selection=dict(final.get("selection") or {}))}, False, **common)

    def split(self, split: str = "validation") -> dict[str, dict]:
        """{task: metrics} of the tasks evaluated on `split`."""
        return {n: t.splits[split] for n, t in self.tasks.items() if split in t.splits}

    def numbers(self) -> dict[str, float]:
        """Every number, flat: `validation/accuracy` (multi-task: `TASK/validation/accuracy`), `train/...`,
        `timings/...`; text reports left out. The keys a --seeds/--cv summary averages."""
        out: dict[str, float] = {}
        for n, t in self.tasks.items():
            for s, m in t.splits.items():
                _flat(m, f"{n}/{s}/" if self.multi else f"{s}/", out)
        _flat(self.train, "train/", out)
        _flat(self.timings, "timings/", out)
        return out


def _flat(d: dict, prefix: str, out: dict) -> None:
    for k, v in d.items():
        if isinstance(v, dict):
            _flat(v, f"{prefix}{k}/", out)
        elif _number(v):
            out[f"{prefix}{k}"] = v
