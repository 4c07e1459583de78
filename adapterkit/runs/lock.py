"""An advisory lock on an output folder, so two adapterkit processes never write into one run (or one study).

The lock is `flock` on a small file holding the holder's PID: the kernel releases it when the holder dies, so a
lock left by a killed process is simply taken over; a live holder is named in the refusal."""

from __future__ import annotations

import errno
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from ..errors import RunDirError

LOCK_NAME = ".adapterkit.lock"


@contextmanager
def locked(folder: Path, field: str, name: str = LOCK_NAME):
    """Hold the lock on `folder` (created if needed) for the duration; `field` names the recipe key or option in
    the refusal."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        f = open(folder / name, "a+")
    except OSError as e:  # a file in the way, a read-only mount, /proc: one line naming the folder
        if e.errno == errno.ENOSPC:
            raise
        raise RunDirError(f"{field}: cannot write to {folder}: {e.strerror}") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise RunDirError(
            f"{field}: {folder} is in use by another adapterkit process (PID {holder}); "
            f"wait for it to end or choose another folder"
        ) from None
    try:
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()
