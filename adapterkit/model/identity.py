"""What identifies a trained run's parts, recorded in run.json (`identity`) when training finishes and checked
whenever the run is loaded: the label map, the head's tensor shapes and a sha256 of every weight, config, label
and tokenizer file. A swapped labels.json or a head copied in from another training scores without error, but
wrongly; this makes it a one-line refusal naming the file instead."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import RunDirError
from ..files import read_json, sha256

FILES = ("labels.json", "head.safetensors")
RUN_FILES = ("recipe.yaml", "labels.json", "head.safetensors")


def require_finished(run: Path, need=RUN_FILES, error=RunDirError) -> None:
    """A run is usable only once training finished it: its files are present and run.json says `finished` (a
    re-train or a crash leaves it `running`, `interrupted` or `failed`, whatever files sit beside it)."""
    run = Path(run)
    if (run / "run.json").is_file():  # its status says more than the files a crash left or did not leave
        status = read_json(run / "run.json", "run status").get("status")
        if status != "finished":
            hint = {
                "interrupted": "continue it with `adapterkit train RECIPE --resume`",
                "failed": "see the error at the end of its log.jsonl, then retrain",
            }.get(status, "it is training, or stopped before it finished; retrain or --resume it")
            raise error(f"{run}: the run is {status or 'unfinished'}, not finished; {hint}")
    for name in (*need, "run.json"):
        if not (run / name).is_file():
            raise error(f"{run}: not a finished adapterkit run ({name} missing)")


FOLDERS = ("adapter", "model", "tokenizer")


def _parts(run: Path) -> list[str]:
    names = [n for n in FILES if (run / n).is_file()]
    for folder in FOLDERS:
        if (run / folder).is_dir():
            names += sorted(str(p.relative_to(run)) for p in (run / folder).rglob("*") if p.is_file())
    return names


def head_shapes(path: Path) -> dict[str, list[int]]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}


def run_identity(run: Path) -> dict:
    """The identity of the run folder as it is now (called once its files are written)."""
    run = Path(run)
    labels = read_json(run / "labels.json", "label map").get("labels") if (run / "labels.json").is_file() else None
    head = head_shapes(run / "head.safetensors") if (run / "head.safetensors").is_file() else {}
    return {"labels": labels, "head_shapes": head, "sha256": {n: sha256(run / n) for n in _parts(run)}}


def recorded_identity(run: Path) -> dict:
    """The identity run.json recorded when training finished (what check_identity held the files to), or the files'
    own for a run from before identities: no second pass over the weights for a caller that loaded the run."""
    rec = read_json(run / "run.json", "run status").get("identity") if (Path(run) / "run.json").is_file() else None
    return rec if isinstance(rec, dict) else run_identity(run)


def check_identity(run: Path) -> None:
    """Refuse a run whose files are not the ones training recorded (runs from before identities pass unchecked)."""
    run = Path(run)
    rec = read_json(run / "run.json", "run status").get("identity") if (run / "run.json").is_file() else None
    if not isinstance(rec, dict):
        return
    if (run / "labels.json").is_file():
        labels = read_json(run / "labels.json", "label map").get("labels")
        if labels != rec.get("labels"):
            raise RunDirError(
                f"{run / 'labels.json'}: labels {json.dumps(labels)[:120]} are not the ones this run was trained "
                f"with ({json.dumps(rec.get('labels'))[:120]}, recorded in run.json); restore the file or retrain"
            )
    for name, digest in (rec.get("sha256") or {}).items():
        path = run / name
        if not path.is_file():
            raise RunDirError(f"{path}: missing; run.json records it as part of this run (restore it or retrain)")
        if sha256(path) != digest:
            raise RunDirError(
                f"{path}: not the file this run was trained with (its sha256 differs from run.json's record); "
                f"the run's files were changed or mixed from different trainings: restore it or retrain"
            )
