"""The `adapterkit` command line."""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Optional

import typer

from . import console
from .config.schema import MAX_BATCH, MAX_TOKENS
from .console import echo
from .errors import AdapterkitError, Collapsed, Interrupted
from .progress import quiet_libraries  # noqa: F401  (also imported from here by scripts)
from .signals import signal_number, stop_on_signals

# Each command imports what it needs when it runs, so `adapterkit --help` and one-line errors stay quick.
app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Parameter-efficient fine-tuning: recipes, adapters, heads, verified exports.",
)
_capture = False  # main() sets it for the `adapterkit` process itself (not with --debug, not for main(argv) callers)


def _interrupted(e: KeyboardInterrupt) -> Interrupted:
    """A signal outside the places that stop gracefully (training, a search, generation): what unwound is undone."""
    signum = signal_number(e)
    return Interrupted(f"interrupted by {signal.Signals(signum).name}; nothing half-written was kept", signum)


def _command(group: typer.Typer, *args, capture: bool = True, **kw):
    """A command whose body runs with library output captured (console.py): help and usage errors, printed while
    the arguments are parsed, still reach the terminal. `capture=False`: a launcher, whose processes inherit the
    terminal and capture their own."""

    def wrap(f):
        @functools.wraps(f)
        def body(*a, **k):
            if _capture and capture:
                console.capture_library_output()
            try:
                if "plugin" not in k:
                    return f(*a, **k)
                from .model import opted_in  # commands that read run folders: PLUGIN and TRUST_REMOTE_CODE

                with opted_in(k["plugin"], k["trust_remote_code"]):
                    return f(*a, **k)
            except KeyboardInterrupt as e:  # typer would return exit code 130 for any signal, and print nothing
                raise _interrupted(e) from None

        return group.command(*args, **kw)(body)

    return wrap


# A run folder is data: the plugins its recipe names and model code its backbone ships run only when asked here.
PLUGIN = typer.Option(
    [],
    "--plugin",
    help="Import this plugin module, which the run's recipe names (repeatable): a run folder's "
    "files never import code on their own.",
)
TRUST_REMOTE_CODE = typer.Option(
    False,
    "--trust-remote-code",
    help="Allow model code shipped with the run's backbone (backbone.trust_remote_code in its recipe).",
)


def _echo_metrics(result: dict) -> None:
    """Metrics as JSON; text reports (the seqeval classification report) printed as text after it."""

    def strip(d):
        return {k: strip(v) for k, v in d.items() if k != "report"} if isinstance(d, dict) else d

    echo(json.dumps(strip(result), indent=1))
    reports = (
        {"": result["report"]}
        if isinstance(result.get("report"), str)
        else {k: v["report"] for k, v in result.items() if isinstance(v, dict) and isinstance(v.get("report"), str)}
    )
    for name, text in reports.items():
        echo(f"\n{name + ': ' if name else ''}entity-level report\n{text}")


def _echo_headline(selection: dict | None) -> None:
    """One line: the headline metric, its split and which weights it scores."""
    h = (selection or {}).get("headline")
    if h and selection:
        note = f" ({h['note']})" if h.get("note") else ""
        also = "".join(f", {k} {v}" for k, v in (h.get("also") or {}).items())
        echo(f"headline: {h['split']} {h['metric']} {h['value']}{also} with the {selection['weights']} weights{note}")
    b = (selection or {}).get("baseline")
    if b:
        echo(
            f"baseline: always answering {b['answer']!r} (the commonest training label): {b['split']} accuracy {b['accuracy']}"
        )


def _fail(msg: str):
    # typer.Exit is swallowed under standalone_mode=False; main() turns this into the one-line error, exit 2.
    raise AdapterkitError(msg)


def _bounded(option: str, lo: float, hi: float | None = None, kind: str = "an integer"):
    """Typer callback: a number outside lo..hi, or nan/inf, is one `adapterkit: error:` line (exit 2) while the
    arguments are parsed, before anything loads (typer's min=/max= print click's usage block instead, and let nan by)."""

    def check(value):
        if value is not None and not (math.isfinite(value) and lo <= value and (hi is None or value <= hi)):
            _fail(
                f"{option}: {value}; expected {kind} "
                + (f"from {lo} to {hi}" if hi is not None else f"of at least {lo}")
            )
        return value

    return check


def _missing_runs(paths) -> None:
    """A run folder that does not exist is refused in one line before torch and the models load (seconds)."""
    from .model.identity import require_finished

    for p in paths:
        if not Path(p).exists() and "=" not in str(p):  # NAME=PATH specs are the run pool's to check
            require_finished(Path(p))


def _process_started() -> float | None:
    """When this process began (the command's start-up: interpreter, imports, recipe checks)."""
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # psutil comes with Accelerate; without it the timings leave start-up out
        return None


@_command(app)
def train(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a recipe value, e.g. --set training.lr=3e-4 (repeatable)."
    ),
    output_dir: Optional[str] = typer.Option(
        None, "--output-dir", "-o", help="Shortcut for --set training.output_dir=DIR."
    ),
    resume: Optional[str] = typer.Option(
        None,
        "--resume",
        help="Continue from the latest checkpoint in output_dir (`--resume` alone) "
        "or from a given checkpoint or run folder (`--resume PATH`).",
    ),
    seeds: Optional[str] = typer.Option(
        None,
        "--seeds",
        help="Train once per seed: a count (3: training.seed and the next two) or a "
        "list (0,1,2), at most 1000 seeds; one run folder each, mean ± sd in summary.md.",
    ),
    cv: Optional[int] = typer.Option(
        None,
        "--cv",
        help="K-fold cross-validation over the training data, 2 to 100 folds (stratified by "
        "label; data.cv_group_column groups rows): one run per fold, mean ± sd. With "
        "--seeds: at most 1000 runs (seeds x folds).",
    ),
):
    """Train a recipe (single- or multi-task) and write its run directory."""
    from .config import resolve_paths
    from .model import load_recipe

    overrides = list(set_) + ([f"training.output_dir={output_dir}"] if output_dir else [])
    if seeds is not None or cv is not None:
        from .tuning import parse_seeds, train_repeats

        if resume is not None:
            _fail("--resume: not with --seeds or --cv (a repeated series continues by running the same command again)")
        base = load_recipe(recipe, overrides)
        train_repeats(recipe, overrides, parse_seeds(seeds, base.training.seed) if seeds else None, cv)
        out = Path(resolve_paths(base).training.output_dir)
        echo((out / "summary.md").read_text(), nl=False)
        echo(f"runs and summary in {out}")
        return
    r = resolve_paths(load_recipe(recipe, overrides))
    from .training import preflight  # torch and the rest load once the recipe is known to be valid
    from .training import train as run_train

    preflight(r, resume=resume)
    final = run_train(r, resume=resume, started=_process_started())
    _echo_metrics(final)
    _echo_headline(final.get("selection"))
    echo(f"run directory: {r.training.output_dir}")


@_command(app, capture=False, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def launch(
    ctx: typer.Context,
    timeout: float = typer.Option(
        1800,
        "--timeout",
        help="Seconds a machine waits for the others (then one line): at the rendezvous and in every collective, "
        "which includes the main process writing a checkpoint.",
    ),
):
    """`accelerate launch` for `train` on one or many machines: ACCELERATE-OPTIONS... train RECIPE [OPTIONS]."""
    from .errors import RecipeError
    from .launch import launch as run_launch

    if not math.isfinite(timeout) or not 1 <= timeout <= 86_400:
        raise RecipeError(f"--timeout {timeout}: expected seconds from 1 to 86400")
    run_launch(list(ctx.args), timeout)


@_command(app)
def tune(
    recipe: Path = typer.Argument(..., help="Recipe YAML file (the starting point; the space overrides its keys)."),
    space: Path = typer.Option(
        ..., "--space", help="Search space YAML: recipe keys -> {low, high[, log, step]} or {choices}, optional `when`."
    ),
    trials: int = typer.Option(
        20,
        "--trials",
        help="Trials to finish (completed, pruned or failed), counting earlier ones of this study; 1 to 10000.",
    ),
    sampler: str = typer.Option("tpe", "--sampler", help="tpe (Bayesian), random or grid."),
    metric: Optional[str] = typer.Option(
        None, "--metric", help="Validation metric to optimise (training.early_stopping.metric by default)."
    ),
    pruner: str = typer.Option(
        "median", "--pruner", help="median, hyperband or none: stop poor trials at their evaluations."
    ),
    timeout: Optional[float] = typer.Option(
        None, "--timeout", help="Stop starting trials after this many seconds (a positive number)."
    ),
    jobs: int = typer.Option(1, "--jobs", help="Trials run at once (processes sharing the study); 1 to 64."),
    cv: Optional[int] = typer.Option(
        None, "--cv", help="Score each trial by K-fold cross-validation (mean over folds); 2 to 100 folds."
    ),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        help="Study folder (training.output_dir by default): study.db, trials/, best_recipe.yaml, report.html.",
    ),
    seed: int = typer.Option(0, "--seed", help="Sampler seed, 0 to 2**32-1."),
    set_: list[str] = typer.Option([], "--set", help="Override a recipe value for every trial (repeatable)."),
    storage: Optional[str] = typer.Option(
        None,
        "--storage",
        help="Database URL of the study (postgresql://user:password@host/db, mysql://..., sqlite:///file.db), "
        "for one search shared by several machines; OUT/study.db by default.",
    ),
    worker: bool = typer.Option(
        False,
        "--worker",
        help="Join the search at --storage that the same command without --worker started: run trials (below "
        "this machine's --out) until the study has --trials; the results are written by the other command.",
    ),
):
    """Search recipe settings with Optuna; each trial is a run folder; rerun the same command to continue a study."""
    from .errors import RecipeError
    from .files import check_out_folder
    from .tuning import tune as run_tune

    if out is not None:  # before any trial: a file in the way or a folder that cannot be written is one line
        check_out_folder(out, "--out", RecipeError)
    result = run_tune(
        recipe, space, list(set_), trials, sampler, metric, timeout, jobs, pruner, out, cv, seed, storage, worker
    )
    echo(json.dumps(result, indent=1, default=str))


@_command(app, "eval")
def eval_cmd(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Run directory from `adapterkit train`; several (on one base) load the base once.", metavar="RUN..."
    ),
    split: str = typer.Option("validation", help="Split of the run's recipe to evaluate."),
    data: Optional[str] = typer.Option(None, "--data", help="Evaluate on this file instead (same columns)."),
    zero_shot: bool = typer.Option(
        False, "--zero-shot", help="Score the run's base model without its adapter (label_words, causal_lm)."
    ),
    plugin: list[str] = PLUGIN,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
):
    """Evaluate trained runs on a split or a file (several runs: metrics by run name)."""
    _missing_runs(run_dirs)
    from .inference import eval_run

    if len(run_dirs) == 1:
        _echo_metrics(eval_run(run_dirs[0], split, data, zero_shot=zero_shot))
        return
    if zero_shot:
        _fail("--zero-shot scores one run's base model: give one run")
    if data:
        from .data.readers import check_utf8

        check_utf8(data, "--data")  # before the base loads
    from .inference.pool import open_pool

    pool = open_pool(run_dirs)  # every run checked before the base loads
    _echo_metrics({name: pool.eval(name, split, data) for name in pool.names()})


@_command(app)
def generate(
    run_dirs: list[Path] = typer.Argument(
        ...,
        help="Run directory of a causal_lm or label_words run; several (on one base) load the base once.",
        metavar="RUN...",
    ),
    prompt: list[str] = typer.Option([], "--prompt", help="Prompt to complete (repeatable)."),
    file: Optional[Path] = typer.Option(
        None, "--file", help="JSON Lines file of prompts (the run's data.prompt_column); each row keeps its fields."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Write the rows with their `completion` here (JSON Lines) instead of printing them."
    ),
    max_new_tokens: Optional[int] = typer.Option(
        None,
        "--max-new-tokens",
        callback=_bounded("--max-new-tokens", 1, MAX_TOKENS),
        help=f"The run's task.generation.max_new_tokens by default (64); 1 to {MAX_TOKENS}.",
    ),
    batch_size: Optional[int] = typer.Option(
        None,
        "--batch-size",
        callback=_bounded("--batch-size", 1, MAX_BATCH),
        help=f"Prompts generated together (task.generation.batch_size, 16); 1 to {MAX_BATCH}.",
    ),
    temperature: float = typer.Option(
        0.0, "--temperature", callback=_bounded("--temperature", 0, None, "a number"), help="0: greedy decoding."
    ),
    zero_shot: bool = typer.Option(False, "--zero-shot", help="Generate with the base model, without the adapter."),
    plugin: list[str] = PLUGIN,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
):
    """Complete prompts with a trained causal LM run, in batches (the run's chat or prompt template is applied)."""
    _missing_runs(run_dirs)
    from .inference import generate as run_generate

    if not prompt and not file:
        _fail("give --prompt TEXT or --file PROMPTS.jsonl")
    if len(run_dirs) > 1:
        if file or zero_shot:
            _fail(f"{'--file' if file else '--zero-shot'} works with one run; several runs take --prompt")
        from .inference.pool import open_pool

        pool = open_pool(run_dirs)  # every run checked before the base loads
        for name in pool.names():
            for row in pool.generate(name, list(prompt), max_new_tokens, temperature, batch_size):
                echo(json.dumps({"run": name, **row}))
        return
    run_dir = run_dirs[0]
    if file and out:  # streamed to OUT as it goes; an interrupted run continues with the same command
        from .inference.generate import generate_file

        w = generate_file(run_dir, file, out, max_new_tokens, temperature, zero_shot, batch_size)
        echo(
            f"{w.rows} completions written to {w.out}"
            + (f" ({w.resumed} kept from the interrupted run)" if w.resumed else "")
        )
        return
    rows = run_generate(
        run_dir, list(prompt), max_new_tokens, temperature, zero_shot, file=file, out=out, batch_size=batch_size
    )
    if out:
        echo(f"{len(rows)} completions written to {out}")
    else:
        for row in rows:
            echo(json.dumps(row))


@_command(app)
def predict(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Run directory; several (on one base) load the base once.", metavar="RUN..."
    ),
    text: list[str] = typer.Option([], "--text", help="Text to classify (repeatable)."),
    file: Optional[Path] = typer.Option(None, "--file", help="File with one text per line."),
    plugin: list[str] = PLUGIN,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
):
    """Predict labels for texts (several runs: each row names its run; LoRA or bottleneck runs of one model class
    answer in one forward pass, each through its own adapter and head)."""
    _missing_runs(run_dirs)
    from .data.readers import read_text_file
    from .inference import predict as run_predict

    texts = list(text)
    if file:  # read (and a non-UTF-8 file refused) before the model loads
        texts += [l.rstrip("\n") for l in read_text_file(file, "--file").splitlines() if l.strip()]
    if not texts:
        _fail("give --text TEXT or --file FILE")
    if len(run_dirs) == 1:
        for row in run_predict(run_dirs[0], texts):
            echo(json.dumps(row))
        return
    from .inference.pool import open_pool

    pool = open_pool(run_dirs)  # every run checked before the base loads
    for name, rows in pool.parallel(pool.names(), texts).items():  # runs of one mixing method: one pass
        for row in rows:
            echo(json.dumps({"run": name, **row}))


@_command(app)
def serve(
    runs: list[str] = typer.Argument(
        ...,
        help="Runs on one base model, each PATH or NAME=PATH (named after its folder by default).",
        metavar="RUN...",
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; other than loopback needs --api-key."),
    port: int = typer.Option(8000, "--port", callback=_bounded("--port", 1, 65535), help="Port to listen on."),
    api_key: Optional[str] = typer.Option(
        None, "--api-key", help="Require `Authorization: Bearer KEY` on every request (or set ADAPTERKIT_API_KEY)."
    ),
    allow_admin: bool = typer.Option(
        False, "--allow-admin", help="Turn on POST /v1/adapters and DELETE /v1/adapters/NAME (load and unload runs)."
    ),
    max_batch: int = typer.Option(
        32, "--max-batch", callback=_bounded("--max-batch", 1, MAX_BATCH), help="Texts in one forward batch."
    ),
    max_wait_ms: float = typer.Option(
        5.0,
        "--max-wait-ms",
        callback=_bounded("--max-wait-ms", 0, 1000, "a number"),
        help="How long a request waits for others to batch with (milliseconds).",
    ),
    plugin: list[str] = PLUGIN,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
):
    """Serve runs over HTTP: one base model, each run's adapter and head by name (see docs/serving.md)."""
    from .serving import ServeSettings
    from .serving import serve as run_server

    settings = ServeSettings(max_batch=max_batch, max_wait_ms=max_wait_ms, api_key=api_key, allow_admin=allow_admin)
    run_server(list(runs), host, port, settings)


@_command(app)
def export(
    run_dirs: list[Path] = typer.Argument(
        ..., help="The run to export; several (PATH or NAME=PATH, one base) with --format bundle.", metavar="RUN..."
    ),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16 (also fp32/bf16/fp16)."),
    fmt: str = typer.Option(
        "merged",
        "--format",
        help="merged (plain transformers), adapter (PEFT adapter + head), onnx (onnxruntime), gguf (llama.cpp, Ollama), "
        "gguf-lora (llama.cpp LoRA adapter + base), bundle (several runs over one base, with a manifest), onnx-adapter (one ONNX base, an onnxruntime adapter file "
        "per LoRA run) or a plugin's format (--plugin).",
    ),
    gguf_type: str = typer.Option(
        "f16", "--gguf-type", help="With --format gguf: f32, f16 or q8_0 weights; gguf-lora: f32 or f16."
    ),
    quantize: Optional[str] = typer.Option(
        None, "--quantize", help="With --format onnx: int8 also writes an int8 dynamic-quantized graph, scored too."
    ),
    verify_samples: Optional[int] = typer.Option(
        None, help="Validation examples used for the agreement check, 1 or more (all by default)."
    ),
    tolerance: Optional[float] = typer.Option(
        None,
        "--tolerance",
        help="Max |merged - unmerged| float32 logit difference, relative to the largest |logit|, a positive number (export.tolerance, 1e-4, by default).",
    ),
    requantize: bool = typer.Option(
        True, "--requantize/--no-requantize", help="Also score the merged export re-quantized to int8 on load."
    ),
    from_merged: Optional[Path] = typer.Option(
        None,
        "--from-merged",
        help="With --format onnx or gguf: a float32 merged export of this run (`export RUN --out DIR`), converted "
        "without merging and verifying the merge again.",
    ),
    plugin: list[str] = PLUGIN,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
):
    """Export a run, verified: merged into a plain transformers model, or the PEFT adapter + head. Writes export_report.json."""
    _missing_runs(run_dirs)
    from .deploy import export as run_export
    from .progress import stage

    dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype)
    if fmt in ("bundle", "onnx-adapter"):  # several runs over one base
        from .deploy.bundle import export_bundle
        from .deploy.formats import ExportOptions
        from .deploy.onnx_adapter import export_onnx_adapters

        write = export_bundle if fmt == "bundle" else export_onnx_adapters
        with stage(f"exporting {len(run_dirs)} run(s) as {fmt} (base, each run, verify)"):
            report = write(list(run_dirs), out, ExportOptions(dtype, verify_samples, tolerance))
        echo(json.dumps({n: {"verification": r["verification"]} for n, r in report["runs"].items()}, indent=1))
        return
    if len(run_dirs) > 1:
        _fail(f"--format {fmt} exports one run; several runs over one base go into --format bundle or onnx-adapter")
    run_dir = run_dirs[0]
    with stage(f"exporting {run_dir} (load, merge, verify, save)"):
        report = run_export(
            run_dir,
            out,
            dtype=dtype,
            fmt=fmt,
            verify_samples=verify_samples,
            tolerance=tolerance,
            requantize=requantize,
            quantize=quantize,
            gguf_type=gguf_type,
            from_merged=None if from_merged is None else str(from_merged),
        )
    echo(json.dumps({k: v for k, v in report.items() if k != "files"}, indent=1))
    echo(f"exported to {out} (report: {out / 'export_report.json'})")


@_command(app)
def verify(
    bundle: Path = typer.Argument(..., help="A folder from `adapterkit export RUN... --format bundle`."),
    files_only: bool = typer.Option(False, "--files-only", help="Check the files' hashes only, not the runs' logits."),
    plugin: list[str] = PLUGIN,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
):
    """Re-check a bundle: every file against its manifest hash, each adapter export against its run's logits."""
    from .deploy.bundle import verify_bundle

    echo(json.dumps(verify_bundle(bundle, recheck=not files_only), indent=1))


@_command(app)
def merge(
    runs: list[Path] = typer.Argument(..., help="Two or more run directories trained on the same backbone."),
    out: Path = typer.Option(..., "--out", help="New run directory for the combined adapter."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Comma-separated weight per run (equal by default)."),
    method: str = typer.Option(
        "linear", "--method", help="linear, cat, svd, ties, dare_linear or dare_ties (PEFT add_weighted_adapter)."
    ),
    density: Optional[float] = typer.Option(
        None, "--density", help="Share of values kept by ties/dare (0.5 by default)."
    ),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Evaluate the combined run on the validation split."),
    plugin: list[str] = PLUGIN,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
):
    """Combine LoRA adapters (and average their heads) into one run directory."""
    from .interpolation import MergeError
    from .interpolation import merge as run_merge

    try:
        w = [float(x) for x in weights.split(",")] if weights else None
    except ValueError:
        raise MergeError(f"--weights: {weights!r}; expected comma-separated numbers, e.g. 0.5,0.5") from None
    echo(json.dumps(run_merge(runs, w, out, method, density, evaluate), indent=1))


@_command(app)
def sweep(
    run_dir: Path = typer.Argument(..., help="Run directory with a LoRA-family or IA3 adapter."),
    scales: str = typer.Option(
        "0,0.25,0.5,0.75,1,1.25",
        "--scales",
        help="Comma-separated adapter scales (0 = base model + trained head), at most 100.",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Folder for sweep.json, sweep.md and sweep.png (RUN_DIR/sweep by default)."
    ),
    split: str = typer.Option("validation", "--split", help="Split of the run's recipe to evaluate on."),
    max_examples: Optional[int] = typer.Option(None, "--max-examples", help="Evaluate on the first N examples only."),
    quantization: Optional[str] = typer.Option(
        None, "--quantization", help="none, int8 or nf4 (the run's own by default)."
    ),
    plugin: list[str] = PLUGIN,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
):
    """Evaluate the adapter at several scales between the base model and the trained adapter; table + plot."""
    from .interpolation import parse_scales
    from .interpolation import sweep as run_sweep

    result = run_sweep(run_dir, parse_scales(scales), out, split, max_examples, quantization)
    echo((Path(result["out"]) / "sweep.md").read_text())
    echo(f"table and plot in {result['out']}")


@_command(app)
def compare(
    run_a: Path = typer.Argument(..., help="Run directory A."),
    run_b: Optional[Path] = typer.Argument(None, help="Run directory B (omit with --baseline)."),
    split: str = typer.Option("test", "--split", help="Split of the runs' recipes both are scored on."),
    data: Optional[str] = typer.Option(None, "--data", help="Score both on this file instead (same columns)."),
    baseline: bool = typer.Option(
        False, "--baseline", help="Compare RUN_A with its own base model, zero-shot (label_words, causal_lm)."
    ),
    samples: int = typer.Option(
        1000, "--samples", help="Paired bootstrap resamples, 100 to 100000 (fewer give no 95% interval worth the name)."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the bootstrap resampling."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write compare.json and compare.md to this folder."),
    plugin: list[str] = PLUGIN,
    trust_remote_code: bool = TRUST_REMOTE_CODE,
):
    """Score two runs on the same examples: each metric, A - B with a paired bootstrap 95% interval, McNemar's exact test."""
    _missing_runs([p for p in (run_a, run_b) if p is not None])
    from .inference.compare import compare as run_compare
    from .inference.compare import format_compare

    echo(format_compare(run_compare(run_a, run_b, split, data, baseline, samples, seed, out)), nl=False)


@_command(app, "import-adapter")
def import_adapter(
    folder: Path = typer.Argument(
        ..., help="A folder AdapterHub's save_adapter(..., with_head=True, use_safetensors=True) wrote."
    ),
    out: Path = typer.Option(..., "--out", help="The run folder to create."),
    base: Optional[str] = typer.Option(
        None, "--base", help="The base model (path, Hub id or package:); default: the one the adapter names."
    ),
    quantization: str = typer.Option("none", "--quantization", help="none, int8 or nf4: how runs of it load the base."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a finished run in --out."),
):
    """Convert an AdapterHub bottleneck adapter and its head into a run folder (eval, predict, export, fusion accept it)."""
    if not folder.is_dir():
        _fail(f"{folder}: no such folder")
    from .runs.imported import import_adapter as run_import

    record = run_import(folder, out, base, quantization, overwrite)
    echo(json.dumps({"run": str(out), **record}, indent=1))


@_command(app)
def report(run_dir: Path = typer.Argument(..., help="Run directory from `adapterkit train` (finished or not).")):
    """Rebuild a run's report.html and plots/*.png from its log, metrics and recipe."""
    from .runs import write_report

    rep = write_report(run_dir)
    for note in rep.notes:
        echo(f"note: {note}", err=True)
    echo(json.dumps({"report": str(rep.html), "plots": [str(p.path) for p in rep.plots]}, indent=1))


@_command(app)
def inspect(
    model_path: str = typer.Argument(..., help="Model folder or package:NAME."),
    method: list[str] = typer.Option(
        [], "--method", "-m", help="Method to report (repeatable); all registered methods by default."
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Adapter setting for the methods that have it, e.g. --set r=16 (repeatable)."
    ),
    gguf_file: Optional[str] = typer.Option(None, "--gguf-file", help="GGUF file inside MODEL_PATH."),
    quantization: str = typer.Option(
        "none", "--quantization", help="none, int8 or nf4 (full fine-tuning is always counted unquantized)."
    ),
    task: str = typer.Option("sequence_classification", "--task", help="Task head to attach."),
    num_labels: int = typer.Option(
        2,
        "--num-labels",
        callback=_bounded("--num-labels", 1, 100_000),
        help="Classes for classification heads (1 to 100000).",
    ),
    tree: bool = typer.Option(True, "--tree/--no-tree", help="Print the module tree."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Module tree, targets per adapter method, and trainable parameters (count, share) per method."""
    from .model.inspect import format_report, inspect_model, parse_settings

    report = inspect_model(
        model_path, list(method) or None, parse_settings(list(set_)), gguf_file, quantization, task, num_labels
    )
    echo(json.dumps(report, indent=1) if as_json else format_report(report, tree))


@_command(app, "env")
def env_cmd(
    lock: Optional[Path] = typer.Option(
        None, "--lock", help="Lock file to compare with (the checkout's requirements.lock by default)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
):
    """Python, the stack's package versions against the lock of tested versions, CPU features, CUDA devices."""
    from .environment import format_report
    from .environment import report as env_report

    if lock is not None and not lock.is_file():
        _fail(f"--lock: {lock} is not a file; expected a pip-compile lock such as requirements.lock")
    rep = env_report(lock)
    echo(json.dumps(rep, indent=1) if as_json else format_report(rep))


data_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Check a recipe's data before training on it.")
app.add_typer(data_app, name="data")


@_command(data_app, "check")
def data_check(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a recipe value, e.g. --set data.delimiter=';' (repeatable)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the audit as JSON."),
):
    """Audit a recipe's data: rows, duplicates, labels, token lengths, texts shared between splits.

    The data is read with the checks training runs (bad data: one error line, exit 2); warnings do not fail the
    check. Loads the tokenizer only, never the model."""
    from .config import resolve_paths
    from .data.audit import audit, format_audit, to_dict
    from .heads import HEADS
    from .model import load_recipe
    from .model.backbone import tokenizer_only
    from .training import multitask
    from .training.preflight import check_labels

    r = resolve_paths(load_recipe(recipe, list(set_)))
    subs = {spec.name: multitask.task_recipe(r, spec) for spec in r.tasks} if r.tasks else {"": r}
    audits = {}
    for name, sub in subs.items():
        audits[name] = audit(sub, tokenizer_only(sub.backbone))
        check_labels(sub, HEADS[sub.task.type])  # labels unseen in training: refused as `train` refuses them
    if as_json:
        echo(json.dumps({n: to_dict(a) for n, a in audits.items()} if r.tasks else to_dict(audits[""]), indent=1))
    else:
        echo("\n\n".join(f"task {n}: " * bool(n) + format_audit(a) for n, a in audits.items()))
    for name, a in audits.items():  # warnings do not fail the check: the data can still train
        for w in a.warnings:
            echo(f"warning: {name + ': ' if name else ''}{w}", err=True)


def _resume_flag(argv: list[str]) -> list[str]:
    """`--resume` with no value means the latest checkpoint (click has no optional option values)."""
    out = list(argv)
    for i, a in enumerate(out):
        if a == "--resume" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out.insert(i + 1, "latest")
            break
    return out


def _debug_flag(argv: list[str]) -> tuple[list[str], bool]:
    """`--debug` anywhere (or ADAPTERKIT_DEBUG=1): unexpected errors print their traceback."""
    return [a for a in argv if a != "--debug"], "--debug" in argv or os.environ.get("ADAPTERKIT_DEBUG") == "1"


def _log_note(e: BaseException) -> str:
    """Where training left the traceback (the run's log.jsonl), when it did."""
    note = next((n for n in getattr(e, "__notes__", ()) if n.startswith("adapterkit-log: ")), None)
    return f"full traceback in {note.split(': ', 1)[1]}; " if note else ""


def main(argv=None):
    global _capture
    process = argv is None
    argv, debug = _debug_flag(sys.argv[1:] if argv is None else list(argv))
    _capture = process and not debug  # library output to the run's log; --debug shows it as it comes
    if process:
        stop_on_signals()  # SIGTERM unwinds like Ctrl-C: temp folders and locks are cleaned up on the way out
    else:
        quiet_libraries()  # an embedding caller's terminal: library chatter kept down as before
    try:
        app(args=_resume_flag(argv), standalone_mode=False)
    except Interrupted as e:
        echo(f"adapterkit: {e}", err=True)
        sys.exit(e.exit_code)
    except Collapsed as e:
        echo(f"adapterkit: error: {e}", err=True)
        sys.exit(3)
    except AdapterkitError as e:
        echo(f"adapterkit: error: {e}", err=True)
        sys.exit(getattr(e, "exit_code", 2))  # 2: bad input; 1: a multi-process run lost a process
    except FloatingPointError as e:
        echo(f"adapterkit: error: {e}", err=True)
        sys.exit(3)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt as e:
        stop = _interrupted(e)
        echo(f"adapterkit: {stop}", err=True)
        sys.exit(stop.exit_code)
    except Exception as e:
        import click

        # usage errors: typer >= 0.29 raises those of its own bundled click, older typer click's
        usage = tuple(c for c in (click.ClickException, getattr(typer, "TyperException", None)) if c is not None)
        if isinstance(e, usage) and hasattr(e, "show"):
            e.show(file=console.stderr())
            sys.exit(getattr(e, "exit_code", 2))
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            echo(
                f"adapterkit: error: no space left on device writing {e.filename or 'a file'}; free space and rerun "
                f"(a training run continues with --resume)",
                err=True,
            )
            sys.exit(2)
        if debug:
            raise
        # Anything else is a bug or an environment problem: one line, the traceback on request.
        msg = str(e).splitlines()[0][:300] if str(e) else ""
        echo(
            f"adapterkit: error: unexpected {type(e).__name__}: {msg} ({_log_note(e)}rerun with --debug for the traceback)",
            err=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
