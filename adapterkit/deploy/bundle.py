"""`adapterkit export RUN... --format bundle --out DIR`: one base model and several runs on it, each in the format
that applies (the PEFT adapter with its head over the shared base; a `method: full` run merged, as it has no base to
share), with `manifest.json`: the base (id, revision, files), each run's task, labels, method, format, files with
sha256, and its verification figures. `adapterkit verify DIR` re-checks every file's hash and each export against
its run.

    DIR/manifest.json
    DIR/base/                 the base checkpoint in full precision (config, safetensors weights, tokenizer)
    DIR/runs/NAME/            one export per run (export_report.json inside)
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..adapters import METHODS
from ..errors import AdapterkitError
from ..files import check_out_dir, new_temp_dir, read_json, sha256
from ..heads import HEADS
from ..inference import verify
from ..inference.pool import checked_specs
from ..model import build_task_model, load_run, load_run_recipe
from ..model.backbone import checkpoint_dir, hub_id
from .formats import ExportOptions

MANIFEST = "manifest.json"
BASE_FILES = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja")  # never pickles


class BundleError(AdapterkitError):
    pass


def export_bundle(runs: list, out: Path, options: ExportOptions) -> dict:
    """Write the bundle of `runs` (PATH or NAME=PATH each, on one base) to `out`, each export verified; nothing lands
    in `out` unless every one passes."""
    from .artifacts import export

    out = Path(out)
    check_out_dir(out, "--out", BundleError)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"--out: {out} is not empty; a bundle goes into a new or empty folder")
    specs = checked_specs(runs, "none")
    recipe = load_run_recipe(specs[0][1])
    tmp = new_temp_dir(out)
    try:
        base = tmp / "base"
        base.mkdir()
        source = checkpoint_dir(recipe.backbone)
        for pattern in BASE_FILES:
            for f in sorted(source.glob(pattern)):
                shutil.copy2(f, base / f.name)
        manifest: dict = {
            "base": {
                "id": hub_id(recipe.backbone),
                "revision": recipe.backbone.revision,
                "path": "base",
                "files": _hashes(tmp, base),
            },
            "runs": {},
        }
        for name, path in specs:
            run_recipe = load_run_recipe(path)
            fmt = "merged" if METHODS[run_recipe.adapter.method].trains_base else "adapter"
            folder = tmp / "runs" / name
            report = export(path, folder, options.dtype, fmt, options.verify_samples, options.tolerance, False)
            manifest["runs"][name] = {
                "run": str(Path(path).resolve()),
                "task": run_recipe.task.type,
                "labels": read_json(path / "labels.json", "label map").get("labels"),
                "method": run_recipe.adapter.method,
                "format": fmt,
                "files": _hashes(tmp, folder),
                "verification": report.get("verification"),
                "reloaded_vs_run": report.get("reloaded_vs_run") or report.get("merged_vs_unmerged"),
            }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _hashes(root: Path, folder: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def verify_bundle(folder: Path, recheck: bool = True, tolerance: float = 1e-4) -> dict:
    """Every file the manifest lists is there with its hash, no other file is, and (with `recheck`) each adapter
    export over the bundled base gives its run's logits. Raises on the first difference, naming the file or run."""
    folder = Path(folder)
    if not (folder / MANIFEST).is_file():
        raise BundleError(
            f"{folder}: no {MANIFEST}; not an adapterkit bundle (adapterkit export RUN... --format bundle)"
        )
    manifest = read_json(folder / MANIFEST, "bundle manifest")
    listed = dict(manifest["base"]["files"])
    for entry in manifest["runs"].values():
        listed.update(entry["files"])
    for rel, digest in listed.items():
        path = folder / rel
        if not path.is_file():
            raise BundleError(f"{path}: missing; {MANIFEST} lists it as part of the bundle")
        if sha256(path) != digest:
            raise BundleError(f"{path}: not the file the bundle was written with (its sha256 differs from {MANIFEST})")
    extra = [str(p.relative_to(folder)) for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST]
    extra = [rel for rel in extra if rel not in listed]
    if extra:
        raise BundleError(f"{folder / extra[0]}: not part of the bundle ({MANIFEST} does not list it)")
    result: dict = {"files": len(listed), "runs": {}}
    for name, entry in manifest["runs"].items():
        run = Path(entry["run"])
        if not recheck or entry["format"] != "adapter" or not (run / "run.json").is_file():
            result["runs"][name] = {"rechecked": False}
            continue
        check = _recheck(folder, name, run, tolerance)
        if not check.pop("ok"):
            raise BundleError(
                f"{folder / 'runs' / name}: its logits differ from the run {run} by {check['max_abs_diff']}"
            )
        result["runs"][name] = {"rechecked": True, **check}
    return result


def _recheck(folder: Path, name: str, run: Path, tolerance: float) -> dict:
    """The adapter export over the bundled base, loaded with PEFT alone, against the run in full precision."""
    from peft import PeftModel

    alone = load_run(run, quantization="none")
    recipe, labels = alone.recipe, alone.labels
    head = HEADS[recipe.task.type]
    probe = verify.eval_loader(recipe, alone.tokenizer, labels, "validation", 32).loader
    ref = verify.run_pass(alone.model, probe, head, probe=32, labels=labels, task=recipe.task)
    del alone
    recipe.backbone.path, recipe.backbone.revision, recipe.backbone.gguf_file = str(folder / "base"), None, None
    model, _ = build_task_model(recipe, labels, quantization="none")
    export = folder / "runs" / name
    loaded = PeftModel.from_pretrained(model, export, is_trainable=False).eval()
    if (export / "head.safetensors").is_file():  # a custom head (not a transformers task class) ships its own file
        from safetensors.torch import load_file

        loaded.get_base_model().load_state_dict(load_file(export / "head.safetensors"), strict=False)
    got = verify.run_pass(loaded, probe, head, probe=32, labels=labels, task=recipe.task)
    return verify.logit_check(got, ref, tolerance)
