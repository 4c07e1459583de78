"""Reading and writing the files adapterkit owns: JSON with one-line errors, atomic replacement of files and
folders, and weights only through safetensors (a clear error for damaged files)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

from .errors import AdapterkitError, RunDirError


def cache_dir() -> Path:
    """Where adapterkit keeps what it can rebuild (converted GGUF checkpoints, tokenized data): $ADAPTERKIT_CACHE."""
    return Path(os.environ.get("ADAPTERKIT_CACHE", Path.home() / ".cache" / "adapterkit"))


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` all or nothing: a unique temporary file beside it (never a name a user's file could
    have: O_EXCL refuses an existing one), flushed to disk, then renamed over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.adapterkit-{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 less the umask, as write_text would
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the data is on disk before the rename makes it the file (a crash leaves old or new)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC and not e.filename:  # a failed write() names no file; the CLI's one line should
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _nearest_existing(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_out_dir(path: Path, option: str = "--out", error=AdapterkitError) -> None:
    """An output folder the command will create or replace: refused, before any model loads, when it is a file, a
    symlink (replacing it would swap the link for a folder; writing into it, write wherever it points) or not writable."""
    path = Path(path)
    if path.is_symlink():
        raise error(f"{option}: {path} is a symlink; give a real folder (or the folder it points to)")
    if path.exists() and not path.is_dir():
        raise error(f"{option}: {path} is a file, not a folder; choose a new folder")
    _check_writable(path, option, error)


def check_out_file(path: Path, option: str = "--out", error=AdapterkitError) -> None:
    """An output file the command will write (replacing an earlier one): refused when it is a folder, a symlink or
    not writable."""
    path = Path(path)
    if path.is_symlink():
        raise error(f"{option}: {path} is a symlink; give the path of a real file")
    if path.is_dir():
        raise error(f"{option}: {path} is a folder; give a file name")
    _check_writable(path, option, error)


def check_out_folder(path: Path, option: str = "--out", error=AdapterkitError) -> None:
    """An output folder the command writes into, created when missing and kept otherwise (a study folder): refused
    when it is a file or cannot be written."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise error(f"{option}: {path} is a file, not a folder; choose a new folder")
    _check_writable(path, option, error)


def _check_writable(path: Path, option: str, error) -> None:
    # Files are created (and folders swapped in) beside `path`, so its nearest existing parent must be a writable folder.
    base = _nearest_existing(Path(os.path.abspath(path)).parent)
    if not base.is_dir():
        raise error(f"{option}: cannot write to {path}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK) or (path.is_dir() and not os.access(path, os.W_OK | os.X_OK)):
        raise error(f"{option}: cannot write to {path}: {path if path.is_dir() else base} is not writable")
    for folder in {base, *([path] if path.is_dir() else [])}:
        why = _cannot_create_in(folder)
        if why:
            raise error(
                f"{option}: cannot write to {path}: cannot create anything in {folder} ({why}); choose a folder you can write to"
            )


def _cannot_create_in(folder: Path) -> str | None:
    """Why nothing can be created in `folder`, found by creating (and removing) an empty folder of a name no one
    else uses: os.access says yes to root even on a read-only mount or in /proc and /sys."""
    probe = Path(folder) / f".adapterkit-probe-{secrets.token_hex(4)}"
    try:
        probe.mkdir()
    except OSError as e:
        return e.strerror or type(e).__name__
    probe.rmdir()
    return None


def read_json(path: Path, what: str, text: str | None = None):
    """A run-directory JSON file (or its already-read `text`), or a RunDirError naming it (a hand-edited or
    truncated file is not a traceback)."""
    try:
        return json.loads(Path(path).read_text() if text is None else text)
    except FileNotFoundError:
        raise RunDirError(f"{path}: {what} missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: {what} is corrupted ({e}); restore it or train into another output_dir") from None


def new_temp_dir(target: Path, kind: str = "tmp") -> Path:
    """A new, empty folder beside `target` with a unique hidden name adapterkit made itself: the only kind of
    folder adapterkit deletes wholesale (a fixed name such as TARGET.tmp could be a user's own folder)."""
    target = Path(target)
    while True:  # mkdir, not tempfile.mkdtemp: mkdtemp's 0o700 would end up as the saved folder's mode
        d = target.with_name(f".{target.name}.adapterkit-{kind}-{secrets.token_hex(4)}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            d.mkdir()  # fails on an existing name: never a folder someone else made
            return d
        except FileExistsError:
            if not target.parent.is_dir():
                raise AdapterkitError(
                    f"{target}: cannot write there: a file is in the way of its folder {target.parent}"
                ) from None
            continue
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise  # the CLI's no-space line
            raise AdapterkitError(
                f"{target}: cannot write there: cannot create a folder beside it ({e.strerror})"
            ) from None


def replace_dir(target: Path, write) -> None:
    """Write into a temporary folder, then swap it in: a crash leaves the old folder or the new one, never half."""
    target = Path(target)
    tmp = new_temp_dir(target)
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = new_temp_dir(target, "old")  # empty: the old folder is renamed onto it, then it is ours to delete
    moved = False
    try:
        if target.exists():
            os.replace(target, old)
            moved = True
        os.replace(tmp, target)
    except BaseException:
        if moved and not target.exists():
            os.replace(old, target)  # the old folder goes back where it was
        else:
            shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
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
        raise RunDirError(
            f"{path}: {what} weights are corrupted or truncated ({str(e).splitlines()[0][:120]})"
        ) from None


def sha256(path: Path) -> str:
    """The file's SHA-256, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
