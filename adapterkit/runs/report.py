"""The training report: PNG plots of loss, learning rate and validation metrics against steps, and one
self-contained `report.html` (plots embedded, final metrics table, the run's settings), built only from
what the run directory already holds (log.jsonl, metrics.json, recipe.yaml, run.json, and data_audit.json
for its "Data" section when training wrote one). Works on a run that is still going or that stopped early: it
reports what is there.

    plots/loss.png                 training loss (and validation loss) vs step
    plots/learning_rate.png        learning rate vs step
    plots/validation_metrics.png   every validation metric vs step (when the run evaluated any)
    report.html
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config.load import parse_yaml
from ..errors import AdapterkitError, RunDirError
from ..files import read_json
from .results import RunResult

# Keys of an eval record that are bookkeeping, not metrics.
_EVAL_META = {"event", "split", "step", "best"}


@dataclass
class Plot:
    name: str
    title: str
    ylabel: str
    # label -> (steps, values): exactly the points drawn, so callers and tests can check what a plot shows.
    series: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    path: Path | None = None


@dataclass
class Report:
    run_dir: Path
    html: Path
    plots: list[Plot]
    final: dict
    notes: list[str]

    def plot(self, name: str) -> Plot | None:
        return next((p for p in self.plots if p.name == name), None)


def read_log(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        raise RunDirError(f"{run_dir}: no log.jsonl (not an adapterkit run directory, or training has not started)")
    records = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            # A run killed mid-write leaves a torn last line; everything before it is still worth plotting.
            if i == len(lines) - 1:
                continue
            raise RunDirError(f"{path}: line {i + 1} is not JSON") from None
    return records


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def collect_series(records: list[dict]) -> list[Plot]:
    """The plots a log supports, with their data; no drawing here."""
    train = [r for r in records if "event" not in r and _number(r.get("step"))]
    evals = [r for r in records if r.get("event") == "eval" and _number(r.get("step"))]
    plots = []
    loss = Plot("loss", "Loss", "loss")
    # "loss", or "loss/<task>" per task in a joint multi-task log.
    for key in sorted({k for r in train for k in r if k == "loss" or k.startswith("loss/")}):
        pts = [(r["step"], r[key]) for r in train if _number(r.get(key))]
        if pts:
            loss.series["train " + (f"loss ({key[5:]})" if "/" in key else "loss")] = (
                [p[0] for p in pts],
                [p[1] for p in pts],
            )
    evals = [dict(r, split=f"{r['task']} {r.get('split', 'validation')}") if r.get("task") else r for r in evals]
    for split in sorted({r.get("split", "validation") for r in evals}):
        pts = [
            (r["step"], r["loss"]) for r in evals if r.get("split", "validation") == split and _number(r.get("loss"))
        ]
        if pts:
            loss.series[f"{split} loss"] = ([p[0] for p in pts], [p[1] for p in pts])
    if loss.series:
        plots.append(loss)
    pts = [(r["step"], r["lr"]) for r in train if _number(r.get("lr"))]
    if pts:
        plots.append(
            Plot("learning_rate", "Learning rate", "learning rate", {"lr": ([p[0] for p in pts], [p[1] for p in pts])})
        )
    metric = Plot("validation_metrics", "Validation metrics", "value")
    for split in sorted({r.get("split", "validation") for r in evals}):
        rows = [r for r in evals if r.get("split", "validation") == split]
        names = sorted({k for r in rows for k, v in r.items() if k not in _EVAL_META and k != "loss" and _number(v)})
        for name in names:
            pts = [(r["step"], r[name]) for r in rows if _number(r.get(name))]
            label = name if split == "validation" else f"{split} {name}"
            metric.series[label] = ([p[0] for p in pts], [p[1] for p in pts])
    if metric.series:
        plots.append(metric)
    return plots


def draw(plot: Plot, path: Path, best_step: int | None = None) -> Path:
    # The object API with the Agg canvas: no global pyplot state, no display needed, safe in threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, (xs, ys) in plot.series.items():
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label)
    if best_step is not None and plot.name != "learning_rate":
        ax.axvline(best_step, color="grey", linestyle=":", linewidth=1, label=f"best step {best_step}")
    ax.set_title(plot.title)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(plot.ylabel)
    if plot.name == "learning_rate":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plot.path = path
    return path


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            rows += _flatten(v, key + ".")
        else:
            rows.append((key, v))
    return rows


def _metrics_table(final: dict) -> str:
    result = RunResult.from_metrics(final)  # a multi-task run: one row per task and split
    eval_splits = {(f"{n} {s}" if result.multi else s): m for n, t in result.tasks.items() for s, m in t.splits.items()}
    if not eval_splits:
        return "<p>No final metrics yet (the run has not finished).</p>"
    names = sorted(
        {k for m in eval_splits.values() for k, v in m.items() if _number(v)}, key=lambda k: (k != "loss", k)
    )
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = "".join(
        f"<tr><th>{html.escape(s)}</th>" + "".join(f"<td>{_fmt(m.get(n))}</td>" for n in names) + "</tr>"
        for s, m in eval_splits.items()
    )
    out = f'<table class="metrics"><tr><th>split</th>{head}</tr>{rows}</table>'
    # Structured extras (e.g. seqeval's per-entity scores and its text report) go below the table.
    for s, m in eval_splits.items():
        for k, v in m.items():
            if isinstance(v, dict) and v:
                out += f"<h3>{html.escape(s)}: {html.escape(k)}</h3>" + _kv_table(_flatten(v), "extra")
            elif isinstance(v, str):
                out += f"<h3>{html.escape(s)}: {html.escape(k)}</h3><pre>{html.escape(v)}</pre>"
    return out


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _kv_table(rows: Sequence[tuple[str, object]], cls: str) -> str:
    body = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{_fmt(v) if not isinstance(v, (list, dict)) else html.escape(json.dumps(v))}</td></tr>"
        for k, v in rows
    )
    return f'<table class="{cls}">{body}</table>'


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:960px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
td{font-family:ui-monospace,monospace}img{max-width:100%;display:block;margin:.5em 0 1em}.note{color:#a60}"""


def _data_section(audit: dict) -> str:
    """The "Data" section from data_audit.json (data/audit.py `to_dict`; a multi-task run: {task: audit})."""
    if "splits" not in audit:
        return "".join(
            f"<h3>task {html.escape(str(n))}</h3>" + _data_section(a) for n, a in audit.items() if isinstance(a, dict)
        )
    cols = ["rows", "distinct_texts", "duplicate_rows", "conflicting_texts", "p50", "p90", "p99", "max", "truncated"]
    names = {
        "distinct_texts": "distinct",
        "duplicate_rows": "dup rows",
        "conflicting_texts": "conflicting",
        "truncated": f"&gt; {_fmt(audit.get('max_length'))} (truncated)",
    }
    head = "".join(f"<th>{names.get(c, c)}</th>" for c in cols)
    rows = ""
    for split, sa in (audit.get("splits") or {}).items():
        vals = dict(sa, **(sa.get("lengths") or {}))
        rows += f"<tr><th>{html.escape(split)}</th>" + "".join(f"<td>{_fmt(vals.get(c))}</td>" for c in cols) + "</tr>"
    out = f'<table class="data"><tr><th>split</th>{head}</tr>{rows}</table>'
    labels = [
        (f"labels {split}", ", ".join(f"{k} {v}" for k, v in sa["labels"].items()))
        for split, sa in (audit.get("splits") or {}).items()
        if sa.get("labels")
    ]
    overlaps = [
        (
            f"overlap {'/'.join(o['splits'])}",
            f"{o['exact']} verbatim, {o['normalized']} normalised, e.g. {o['example']!r}",
        )
        for o in audit.get("overlaps") or []
    ]
    if labels or overlaps:
        out += _kv_table(labels + overlaps, "data-extra")
    out += "".join(f'<p class="note">warning: {html.escape(w)}</p>' for w in audit.get("warnings") or [])
    return out


def write_html(
    run_dir: Path,
    plots: list[Plot],
    final: dict,
    info: dict,
    recipe: dict | None,
    notes: list[str],
    data_audit: dict | None = None,
) -> Path:
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>adapterkit report: {html.escape(run_dir.name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Training report: {html.escape(run_dir.name)}</h1>",
        f"<p>Run directory: <code>{html.escape(str(run_dir))}</code></p>",
    ]
    parts += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
    if final.get("warnings"):
        parts.append(
            "<h2>Warnings</h2>" + "".join(f'<p class="note">warning: {html.escape(w)}</p>' for w in final["warnings"])
        )
    if final.get("recoveries"):
        parts.append(
            "<h2>Recoveries from collapse</h2>"
            + "".join(
                f'<p class="note">step {r["step"]}: back to the weights of {html.escape(str(r["restored"]))}, learning '
                f"rate x{r['lr_factor']} (now {r['lr']:.3g})</p>"
                for r in final["recoveries"]
            )
        )
    parts.append("<h2>Final metrics</h2>" + _metrics_table(final))
    sel = final.get("selection") or {}
    summary = [("weights scored", sel["weights"])] if sel.get("weights") else []
    if sel.get("headline"):
        h = sel["headline"]
        summary.append(
            ("headline", f"{h['split']} {h['metric']} {h['value']}" + (f" ({h['note']})" if h.get("note") else ""))
        )
    summary += [(k, v) for k, v in (final.get("train") or {}).items()]
    summary += [
        (k, info[k])
        for k in ("status", "started", "finished", "trainable_params", "total_params", "total_steps")
        if k in info
    ]
    if summary:
        parts.append("<h2>Run</h2>" + _kv_table(summary, "run"))
    if final.get("timings"):
        parts.append(
            "<h2>Time</h2><p>Wall seconds of each part of the command (the report's own time is not in this "
            "page's copy).</p>" + _kv_table(list(final["timings"].items()), "timings")
        )
    env = info.get("environment") or {}
    if env:
        rows = [("python", env.get("python"))] + [
            (n, v or "not installed") for n, v in (env.get("packages") or {}).items()
        ]
        cpu = env.get("cpu") or {}
        rows.append(
            ("cpu", ", ".join([str(cpu.get("torch_capability", "?"))] + [f for f, on in cpu.items() if on is True]))
        )
        rows.append(("cuda", ", ".join(env.get("cuda") or []) or "no devices"))
        parts.append("<h2>Environment</h2>" + _kv_table(rows, "environment"))
    if data_audit:
        parts.append("<h2>Data</h2>" + _data_section(data_audit))
    if plots:
        parts.append("<h2>Plots</h2>")
    for p in plots:
        if p.path is None:  # not drawn
            continue
        data = base64.b64encode(p.path.read_bytes()).decode("ascii")
        parts.append(
            f"<h3>{html.escape(p.title)}</h3><img alt='{html.escape(p.title)}' src='data:image/png;base64,{data}'>"
        )
    if recipe:
        parts.append("<h2>Settings</h2>" + _kv_table(_flatten(recipe), "settings"))
    parts.append("</body></html>")
    out = run_dir / "report.html"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(out)
    return out


def write_report(run_dir) -> Report:
    """(Re)build `plots/*.png` and `report.html` in `run_dir` from its log, metrics and recipe."""
    import yaml

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory")
    records = read_log(run_dir)
    notes = []
    final = {}
    if (run_dir / "metrics.json").is_file():
        final = read_json(run_dir / "metrics.json", "final metrics")
    else:
        notes.append("metrics.json is missing: the run has not finished (or stopped early); plots show the log so far.")
    info = read_json(run_dir / "run.json", "run status") if (run_dir / "run.json").is_file() else {}
    recipe = None
    if (run_dir / "recipe.yaml").is_file():
        # A run folder is data: its recipe read as recipes are (YAML 1.2 scalars, aliases bounded: a billion-laughs
        # recipe.yaml hung the settings table); a damaged one costs the section, not the report.
        try:
            recipe = parse_yaml((run_dir / "recipe.yaml").read_text(encoding="utf-8"), str(run_dir / "recipe.yaml"))
        except (AdapterkitError, yaml.YAMLError, RecursionError, UnicodeDecodeError) as e:
            notes.append(f"recipe.yaml not shown: {str(e).splitlines()[0][:200]}")
        recipe = recipe if isinstance(recipe, dict) else None
    stopped = [r for r in records if r.get("event") in ("stopped", "early_stop")]
    notes += [
        f"{r['event'].replace('_', ' ')} at step {r.get('step')}" + (f": {r['reason']}" if r.get("reason") else "")
        for r in stopped
    ]
    best_step = (final.get("train") or {}).get("best_step")
    plots = collect_series(records)
    if not plots:
        notes.append("log.jsonl has no training steps yet: nothing to plot.")
    for p in plots:
        draw(p, run_dir / "plots" / f"{p.name}.png", best_step)
    audit = None
    if (run_dir / "data_audit.json").is_file():
        try:
            audit = read_json(run_dir / "data_audit.json", "data audit")
        except RunDirError as e:  # the audit is an extra: a damaged one costs its section, not the report
            notes.append(str(e))
    out = write_html(run_dir, plots, final, info, recipe, notes, audit)
    return Report(run_dir, out, plots, final, notes)


def write_report_safely(run_dir) -> Report | None:
    """At the end of training: a failed report must not cost the trained run, so it warns instead of raising."""
    import warnings

    try:
        return write_report(run_dir)
    except Exception as e:  # noqa: BLE001
        warnings.warn(f"adapterkit: training report not written for {run_dir}: {e}", stacklevel=2)
        return None
