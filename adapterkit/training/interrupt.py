"""SIGINT (Ctrl-C) and SIGTERM during training. In the loop (`armed`): finish the current step, write a checkpoint,
stop with exit 130/143 and a line saying how to resume. Outside it (loading, the final save) or on a second signal:
stop at once, as Ctrl-C does (the run is marked failed; its files stay as they were)."""

from __future__ import annotations

import signal
import threading

import torch

from ..signals import SIGNALS, Stopped


class StopRequest:
    """Installed for the whole training; `poll()` at each optimizer step says which signal asked to stop (or None)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.armed = False
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old.clear()
        return False

    def _handle(self, signum, frame):
        if self.armed and self.signum is None:
            self.signum = signum
            return
        raise Stopped(signum)

    def poll(self, accelerator) -> int | None:
        """The signal to stop for, agreed by every process (each must write its part of the checkpoint at the same
        step): one small all-reduce per step, only when there are several processes."""
        if accelerator.num_processes == 1:
            return self.signum
        flag = accelerator.reduce(torch.tensor(self.signum or 0, device=accelerator.device), "max").item()
        return int(flag) or None
