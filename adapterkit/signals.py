"""SIGINT and SIGTERM for every command: both unwind the stack as Ctrl-C does, so `finally` blocks, temporary
folders and locks are cleaned up, and the CLI ends with one line and exit 128 + the signal number. Training
(training/interrupt.py) and a search (tuning/study.py) take over while they can stop more gracefully."""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(KeyboardInterrupt):
    """A signal asked the command to stop. A KeyboardInterrupt, so code that already cleans up after Ctrl-C (and
    libraries that let Ctrl-C through) treat SIGTERM the same way."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def signal_number(e: BaseException) -> int:
    """The signal behind a stop: Stopped carries it; a bare KeyboardInterrupt is Ctrl-C."""
    return getattr(e, "signum", signal.SIGINT)


def _raise(signum, _frame):
    raise Stopped(signum)


def stop_on_signals() -> None:
    """Installed once by the CLI for the whole command (only the main thread may set handlers)."""
    if threading.current_thread() is threading.main_thread():
        for s in SIGNALS:
            signal.signal(s, _raise)
