"""Progress bars for the long steps (loading, tokenizing, training, evaluation, export), quiet in logs.

Bars show only when stderr is a terminal, so CI logs and files stay clean (log.jsonl has the numbers); there,
training prints a plain line every 30 s instead (step, loss, examples/s, time left). ADAPTERKIT_PROGRESS=1 forces
bars on, ADAPTERKIT_PROGRESS=0 turns bars and lines off.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from . import console


def _forced() -> bool | None:
    """ADAPTERKIT_PROGRESS: True (1/true/yes/on), False (0/false/no/off) or None (not set)."""
    force = os.environ.get("ADAPTERKIT_PROGRESS", "").strip().lower()
    return True if force in ("1", "true", "yes", "on") else False if force in ("0", "false", "no", "off") else None


def enabled(file=None) -> bool:
    if _forced() is not None:
        return bool(_forced())
    stream = file or console.stderr()
    return bool(getattr(stream, "isatty", lambda: False)())


def progress_lines() -> bool:
    """Training's plain progress lines (step, loss, time left, every 30 s) where no bar shows; ADAPTERKIT_PROGRESS=0
    turns them off too."""
    return _forced() is not False


def progress(iterable=None, **kw):
    """tqdm over `iterable` (or a manual bar with total=...), off when not interactive."""
    from tqdm.auto import tqdm

    kw.setdefault("file", console.stderr())
    off = kw.pop("disable", False) or not enabled(kw["file"])
    return tqdm(iterable, disable=off, dynamic_ncols=True, **kw)


@contextmanager
def stage(desc: str, file=None):
    """A one-line bar for a step with no natural iteration (loading a model, merging): shows the step while it
    runs and its duration when it ends."""
    bar = progress(total=1, desc=desc, bar_format="{desc}: {elapsed}", leave=True, file=file)
    try:
        yield bar
        bar.update(1)
    finally:
        bar.close()


def chunks(n: int, size: int, desc: str, min_items: int = 0):
    """Start offsets of `size`-sized chunks of n items, with a bar when there are at least min_items."""
    starts = range(0, n, size)
    return progress(starts, desc=desc, total=len(starts), unit="chunk", leave=False, disable=n < min_items)


def quiet_libraries() -> None:
    """Keep library chatter (load reports, per-call warnings) out of the user's terminal."""
    import logging
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*MatMul8bitLt.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    import datasets

    if not enabled():  # data preparation (datasets' map) shows its bar only where ours would show
        datasets.disable_progress_bars()
