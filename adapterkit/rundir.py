"""The run directory: everything a trained run leaves behind, written so a finished run is never clobbered.

    recipe.yaml        resolved recipe (all defaults filled in, absolute paths)
    labels.json        label map
    tokenizer/         tokenizer files
    adapter/           PEFT adapter: adapter_config.json + adapter_model.safetensors
    model/             full fine-tuning only: the whole model
    head.safetensors   task-head weights
    metrics.json       final metrics per split
    log.jsonl          one JSON object per log step / evaluation
    run.json           status and bookkeeping
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from .config import save_recipe
from .errors import RunDirError


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_json(path: Path, what: str, text: str | None = None):
    """A run-directory JSON file (or its already-read `text`), or a RunDirError naming it (a hand-edited or
    truncated file is not a traceback)."""
    try:
        return json.loads(Path(path).read_text() if text is None else text)
    except FileNotFoundError:
        raise RunDirError(f"{path}: {what} missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: {what} is corrupted ({e}); restore it or train into another output_dir") from None


def finished(status: Path) -> bool:
    if not status.is_file():
        return False
    text = status.read_text()
    # An empty status file (a run that died before its first write) counts as unfinished.
    return bool(text.strip()) and read_json(status, "run status", text).get("status") == "finished"


class RunWriter:
    def __init__(self, run_dir: Path, recipe):
        self.dir = Path(run_dir)
        self.recipe = recipe
        self.on_log = None  # optional callback for each record, e.g. forwarding to experiment trackers

    def check_writable(self) -> None:
        """Before any expensive work: refuse to clobber a finished run; make sure we can write."""
        status = self.dir / "run.json"
        if finished(status) and not self.recipe.training.overwrite:
            raise RunDirError(f"training.output_dir: {self.dir} holds a finished run; choose another output_dir or set training.overwrite=true")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise RunDirError(f"training.output_dir: cannot write to {self.dir}: {e.strerror}") from None

    def start(self, tokenizer, labels, info: dict, resume: bool = False) -> None:
        for stale in ("metrics.json",) if resume else ("metrics.json", "log.jsonl"):  # a resumed run appends to its log
            (self.dir / stale).unlink(missing_ok=True)
        save_recipe(self.recipe, self.dir / "recipe.yaml")
        atomic_write_text(self.dir / "labels.json", json.dumps({"labels": labels}, indent=1))
        tokenizer.save_pretrained(self.dir / "tokenizer")
        self.info = dict(info, status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S"))
        atomic_write_text(self.dir / "run.json", json.dumps(self.info, indent=1))

    def log(self, record: dict) -> None:
        with open(self.dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.on_log is not None:
            self.on_log(record)

    def finish(self, model, head_modules, final: dict) -> None:
        from safetensors.torch import save_file

        from .heads import head_state_dict

        if self.recipe.adapter.method == "full":
            _replace_dir(self.dir / "model", lambda d: model.save_pretrained(d))
        else:
            _replace_dir(self.dir / "adapter", lambda d: model.save_pretrained(d))
        save_file(head_state_dict(model, head_modules), str(self.dir / "head.safetensors.tmp"))
        os.replace(self.dir / "head.safetensors.tmp", self.dir / "head.safetensors")
        atomic_write_text(self.dir / "metrics.json", json.dumps(final, indent=1))
        self.info.update(status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        atomic_write_text(self.dir / "run.json", json.dumps(self.info, indent=1))


def _replace_dir(target: Path, write) -> None:
    """Write into a temporary folder, then swap it in: a crash leaves the old folder or the new one, never half."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    old = target.with_name(target.name + ".old")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
