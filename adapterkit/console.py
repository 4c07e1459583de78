"""The terminal is adapterkit's: its own lines go to the real stdout and stderr, and whatever a library writes while a
command runs goes to the run's log.jsonl instead (`--debug` shows it on the terminal).

One mechanism for every kind of library output: the process's file descriptors 1 and 2 point at a capture file, so
logging (a root handler, with warnings routed into logging), progress bars, `print` from import-time code and text
written by C extensions all land there; adapterkit writes through duplicates of the original descriptors. The
whole-process capture is installed only by the `adapterkit` process itself (cli.main with no argv): code that imports
adapterkit as a library, and tests calling main(argv), keep their own streams, except around the few library calls
that print whoever calls them (`library_call`), whose output is held for drain().
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from contextlib import contextmanager


class _Sink:
    """The capture file and how far drain() has read it."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()
        self.read_at = 0


class _Terminal:
    """adapterkit's own streams: duplicates of descriptors 1 and 2 taken before they were pointed at the sink."""

    def __init__(self) -> None:
        self.stdout = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
        self.stderr = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")


_sink: _Sink | None = None
_terminal: _Terminal | None = None  # set once the whole process's output is captured


def _flush() -> None:
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except (OSError, ValueError):
            pass


def _point_at_sink() -> None:
    global _sink
    _flush()
    _sink = _sink or _Sink()
    os.dup2(_sink.file.fileno(), 1)
    os.dup2(_sink.file.fileno(), 2)


@contextmanager
def library_call():
    """Library output written inside the block goes to the capture file (held for drain()), then the descriptors are
    restored: for calls that print whoever calls them, like importing bitsandbytes, which looks up a Hub kernel."""
    if _terminal is not None or _debug():  # the whole process is captured already, or --debug shows it all
        yield
        return
    try:
        saved = os.dup(1), os.dup(2)
    except OSError:
        yield
        return
    try:
        _point_at_sink()
        yield
    finally:
        _flush()
        for fd, orig in zip(saved, (1, 2)):
            os.dup2(fd, orig)
            os.close(fd)


def _debug() -> bool:
    return os.environ.get("ADAPTERKIT_DEBUG") == "1" or "--debug" in sys.argv[1:]


def stdout():
    """Where adapterkit's own output goes: the terminal, also while library output is captured."""
    return _terminal.stdout if _terminal else sys.stdout


def stderr():
    return _terminal.stderr if _terminal else sys.stderr


def echo(message: str = "", err: bool = False, nl: bool = True) -> None:
    stream = stderr() if err else stdout()
    stream.write(message + ("\n" if nl else ""))
    stream.flush()


def capture_library_output() -> None:
    """Send every library's output to the capture file from here to the end of the process."""
    global _terminal
    if _terminal is not None:
        return
    try:
        _flush()
        _terminal = _Terminal()
    except OSError:  # no usable descriptors (a closed stdout): leave the streams as they are
        return
    _point_at_sink()
    logging.captureWarnings(True)
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)  # fd 2: the capture file
    handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    warnings.simplefilter("default")  # each distinct warning once per place, as Python shows them
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Library bars would be \r-redrawn lines in the log; adapterkit draws its own on the real terminal.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def drain() -> list[str]:
    """Library output written since the last call, as lines (a redrawn line keeps its last state); [] when nothing
    is captured."""
    if _sink is None:
        return []
    _flush()
    fd = _sink.file.fileno()
    end = os.fstat(fd).st_size
    if end <= _sink.read_at:
        return []
    data = os.pread(fd, end - _sink.read_at, _sink.read_at)
    _sink.read_at = end
    lines = (line.rstrip("\r").split("\r")[-1].rstrip() for line in data.decode("utf-8", "replace").split("\n"))
    return [line for line in lines if line.strip()]
