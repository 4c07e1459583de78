"""Reading and writing the files adapterkit owns: JSON with one-line errors, atomic replacement of files and
folders, and weights only through safetensors (a clear error for damaged files)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .errors import RunDirError


def atomic_write_text(path: Path, text: str) -> None:
    tmp = Path(path).with_name(Path(path).name + ".tmp")
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


def replace_dir(target: Path, write) -> None:
    """Write into a temporary folder, then swap it in: a crash leaves the old folder or the new one, never half."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    old = target.with_name(target.name + ".old")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def check_safetensors(path: Path, what: str) -> None:
    from safetensors import safe_open

    if not Path(path).is_file():
        raise RunDirError(f"{path}: {what} weights missing")
    try:
        with safe_open(str(path), "pt") as f:
            for k in f.keys():
                f.get_slice(k)
    except Exception as e:  # safetensors raises its own error types for truncated or corrupted headers
        raise RunDirError(f"{path}: {what} weights are corrupted or truncated ({str(e).splitlines()[0][:120]})") from None
