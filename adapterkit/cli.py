"""The `adapterkit` command line."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .errors import AdapterkitError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Parameter-efficient fine-tuning: recipes, adapters, heads, verified exports.")


def _fail(msg: str, code: int = 2):
    typer.echo(f"adapterkit: error: {msg}", err=True)
    raise typer.Exit(code)


@app.command()
def train(recipe: Path = typer.Argument(..., help="Recipe YAML file."),
          set_: List[str] = typer.Option([], "--set", help="Override a recipe value, e.g. --set training.lr=3e-4 (repeatable)."),
          output_dir: Optional[str] = typer.Option(None, "--output-dir", "-o", help="Shortcut for --set training.output_dir=DIR.")):
    """Train a recipe and write its run directory."""
    from .config import load_recipe, resolve_paths
    from .preflight import preflight
    from .trainer import train as run_train

    overrides = list(set_) + ([f"training.output_dir={output_dir}"] if output_dir else [])
    r = resolve_paths(load_recipe(recipe, overrides))
    preflight(r)
    final = run_train(r)
    typer.echo(json.dumps({k: v for k, v in final.items()}, indent=1))
    typer.echo(f"run directory: {r.training.output_dir}")


@app.command("eval")
def eval_cmd(run_dir: Path = typer.Argument(..., help="Run directory from `adapterkit train`."),
             split: str = typer.Option("validation", help="Split of the run's recipe to evaluate."),
             data: Optional[str] = typer.Option(None, "--data", help="Evaluate on this file instead (same columns).")):
    """Evaluate a trained run on a split or a file."""
    from .inference import eval_run

    typer.echo(json.dumps(eval_run(run_dir, split, data), indent=1))


@app.command()
def predict(run_dir: Path = typer.Argument(...),
            text: List[str] = typer.Option([], "--text", help="Text to classify (repeatable)."),
            file: Optional[Path] = typer.Option(None, "--file", help="File with one text per line.")):
    """Predict labels for texts."""
    from .inference import predict as run_predict

    texts = list(text)
    if file:
        if not file.is_file():
            _fail(f"--file: {file} not found")
        texts += [l.rstrip("\n") for l in file.read_text().splitlines() if l.strip()]
    if not texts:
        _fail("give --text TEXT or --file FILE")
    for row in run_predict(run_dir, texts):
        typer.echo(json.dumps(row))


@app.command()
def export(run_dir: Path = typer.Argument(...),
           out: Path = typer.Option(..., "--out", help="Output folder."),
           dtype: str = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16 (also fp32/bf16/fp16)."),
           fmt: str = typer.Option("merged", "--format", help="merged (plain transformers) or adapter (PEFT adapter + head)."),
           verify_samples: Optional[int] = typer.Option(None, help="Validation examples used for the agreement check (all by default).")):
    """Export a run: merged into a plain transformers model, verified."""
    from .export import export as run_export

    dtype = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype)
    report = run_export(run_dir, out, dtype, fmt, verify_samples)
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "files"}, indent=1))
    typer.echo(f"exported to {out}")


def quiet_libraries() -> None:
    """Keep library chatter (load reports, per-call warnings) out of the user's terminal."""
    import logging
    import warnings

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything we load is local; never wait on the network
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets

    datasets.disable_progress_bars()


def main(argv=None):
    quiet_libraries()
    try:
        app(args=argv, standalone_mode=False)
    except AdapterkitError as e:
        typer.echo(f"adapterkit: error: {e}", err=True)
        sys.exit(2)
    except FloatingPointError as e:
        typer.echo(f"adapterkit: error: {e}", err=True)
        sys.exit(3)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
