"""Checks on files we load: weights only through safetensors, and a clear error for damaged files."""
from __future__ import annotations

from pathlib import Path

from .errors import RunDirError


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
