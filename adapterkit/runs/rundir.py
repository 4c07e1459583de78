"""The run directory: everything a trained run leaves behind, written so a finished run is never clobbered.

    recipe.yaml        resolved recipe (all defaults filled in, absolute paths)
    labels.json        label map
    tokenizer/         tokenizer files
    adapter/           PEFT adapter: adapter_config.json + adapter_model.safetensors
    model/             full fine-tuning only: the whole model
    head.safetensors   task-head weights
    metrics.json       final metrics per split
    log.jsonl          one JSON object per log step / evaluation
    run.json           status and bookkeeping (and the backbone's Hub id and commit, when it came from the Hub)
    data_split.json    data.validation_split only: which training rows were held out for validation
    report.html        training report (plots/ beside it), see report.py

Training writes it (training/loop.py through RunWriter); eval, predict, export, merge and sweep read it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from .. import console
from ..adapters import METHODS
from ..config import save_recipe
from ..errors import RunDirError
from ..files import atomic_write_text, read_json, replace_dir
from ..model.identity import run_identity


def finished(status: Path) -> bool:
    if not status.is_file():
        return False
    text = status.read_text()
    # An empty status file (a run that died before its first write) counts as unfinished.
    return bool(text.strip()) and read_json(status, "run status", text).get("status") == "finished"


INITIAL_ADAPTER = "adapter_init"
# What may sit in an output folder before its run.json exists: a lock, a write probe, tracker logs.
PRE_RUN_NAMES = {".adapterkit.lock", "trackers"}


def foreign_entries(folder: Path) -> list[str]:
    """Entries of `folder` that adapterkit did not write, when it holds no run (empty when it does)."""
    folder = Path(folder)
    if not folder.is_dir() or (folder / "run.json").is_file():
        return []
    return sorted(
        p.name
        for p in folder.iterdir()
        if p.name not in PRE_RUN_NAMES and not p.name.startswith(".write-test-") and not _only_checkpoints(p)
    )


def _only_checkpoints(p: Path) -> bool:
    """A checkpoints/ folder holding nothing but checkpoints (copied in to resume from)."""
    return (
        p.name == "checkpoints" and p.is_dir() and all(re.match(r"^\.?(tmp-)?step-\d+$", c.name) for c in p.iterdir())
    )


class RunWriter:
    def __init__(self, run_dir: Path, recipe):
        self.dir = Path(run_dir)
        self.recipe = recipe
        self.on_log = None  # optional callback for each record, e.g. forwarding to experiment trackers
        self.info: dict | None = None  # run.json's content, once start() has written it

    def check_writable(self) -> None:
        """Before any expensive work: refuse to clobber a finished run or a folder adapterkit did not create (training
        clears a run's checkpoints/ and replaces its files: they must be ours); make sure we can write."""
        status = self.dir / "run.json"
        if finished(status) and not self.recipe.training.overwrite:
            raise RunDirError(
                f"training.output_dir: {self.dir} holds a finished run; choose another output_dir or set training.overwrite=true"
            )
        foreign = foreign_entries(self.dir)
        if foreign:
            raise RunDirError(
                f"training.output_dir: {self.dir} is not empty and is not an adapterkit run (no run.json; holds "
                f"{foreign[:3]}); choose a new or empty folder"
            )
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / f".write-test-{os.getpid()}"  # one per process: ranks probe the same folder at once
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise RunDirError(f"training.output_dir: cannot write to {self.dir}: {e.strerror}") from None

    def start(self, tokenizer, labels, info: dict, resume: bool = False) -> None:
        # The status first: from here until finish() the folder is not a usable run, so a crash in a re-train never
        # leaves the new label map beside the old weights looking finished.
        self.info = dict(info, status="running", started=time.strftime("%Y-%m-%dT%H:%M:%S"))
        atomic_write_text(self.dir / "run.json", json.dumps(self.info, indent=1))
        for stale in ("metrics.json",) if resume else ("metrics.json", "log.jsonl"):  # a resumed run appends to its log
            (self.dir / stale).unlink(missing_ok=True)
        save_recipe(self.recipe, self.dir / "recipe.yaml")
        atomic_write_text(self.dir / "labels.json", json.dumps({"labels": labels}, indent=1))
        tokenizer.save_pretrained(self.dir / "tokenizer")

    def write_json(self, name: str, data) -> None:
        atomic_write_text(self.dir / name, json.dumps(data, indent=1))

    def log(self, record: dict) -> None:
        library = console.drain()  # what libraries wrote since the last record, kept off the terminal
        with open(self.dir / "log.jsonl", "a") as f:
            if library:
                f.write(json.dumps({"event": "library_output", "lines": library}) + "\n")
            f.write(json.dumps(record) + "\n")
        if self.on_log is not None:
            self.on_log(record)

    def save_weights(self, model, head_modules) -> None:
        """The trained weights: the PEFT adapter (or the whole model, for methods that train the base) and the head."""
        from safetensors.torch import save_file

        from ..model import head_state_dict

        folder = "model" if METHODS[self.recipe.adapter.method].trains_base else "adapter"
        replace_dir(self.dir / folder, lambda d: self._save(model, d, folder))
        shutil.rmtree(self.dir / INITIAL_ADAPTER, ignore_errors=True)  # only needed for that conversion
        save_file(head_state_dict(model, head_modules), str(self.dir / "head.safetensors.tmp"))
        os.replace(self.dir / "head.safetensors.tmp", self.dir / "head.safetensors")

    def save_initial_adapter(self, model) -> None:
        """PiSSA/OLoRA runs: the adapter as initialised, so the trained one can be saved as a plain LoRA delta against
        the original base (PEFT converts it); kept until the run finishes, also across --resume."""
        if (self.dir / INITIAL_ADAPTER / "adapter_config.json").is_file():
            return
        cfg = model.peft_config["default"]
        init, cfg.init_lora_weights = cfg.init_lora_weights, True  # loading the saved copy must not initialise again
        try:
            replace_dir(self.dir / INITIAL_ADAPTER, lambda d: model.save_pretrained(d))
        finally:
            cfg.init_lora_weights = init

    def _save(self, model, d: Path, folder: str) -> None:
        initial = self.dir / INITIAL_ADAPTER
        if folder == "adapter" and initial.is_dir():
            model.save_pretrained(d, path_initial_model_for_weight_conversion=str(initial))
        else:
            model.save_pretrained(d)
        from ..model.backbone import hub_id

        base = hub_id(self.recipe.backbone)
        config = d / "adapter_config.json"
        if folder == "adapter" and base and config.is_file():  # name the base by its Hub id, not a cache path
            cfg = json.loads(config.read_text())
            cfg["base_model_name_or_path"], cfg["revision"] = base, self.recipe.backbone.revision
            atomic_write_text(config, json.dumps(cfg, indent=2))

    def set_status(self, status: str, **extra) -> None:
        """`interrupted` (a checkpoint to resume from) or `failed` (the error in the log); never usable as a run."""
        if self.info is not None:
            self.info.update(status=status, **extra)
            atomic_write_text(self.dir / "run.json", json.dumps(self.info, indent=1))

    def finish(self, final: dict) -> None:
        """Final metrics, then the status that makes the run usable."""
        library = console.drain()
        if library:
            self.log({"event": "library_output", "lines": library})
        atomic_write_text(self.dir / "metrics.json", json.dumps(final, indent=1))
        assert self.info is not None, "finish() comes after start()"
        self.info.update(
            status="finished", finished=time.strftime("%Y-%m-%dT%H:%M:%S"), identity=run_identity(self.dir)
        )
        atomic_write_text(self.dir / "run.json", json.dumps(self.info, indent=1))
