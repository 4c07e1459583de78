"""Repositories on the Hugging Face Hub (models and data sets) as local folders, through huggingface_hub's cache.

Offline when the user sets HF_HUB_OFFLINE=1 (then only the cache is read); adapterkit never sets it itself."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from .errors import AdapterkitError


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def cache_location() -> str:
    """Where the hub cache is, for messages: cache_dir() and the variable that set it."""
    where = cache_dir()
    if where is None:
        return "~/.cache/huggingface/hub (HF_HOME unset)"
    return f"{where} ({'HF_HUB_CACHE' if os.environ.get('HF_HUB_CACHE') else 'HF_HOME'})"


def cache_dir() -> str | None:
    """The hub cache folder as the environment says now (huggingface_hub reads it once, at import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    return str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None


_BAD_REVISION_CHARS = set(" ~^:?*[\\")  # git check-ref-format's


def revision_problem(revision: str) -> str | None:
    """Why `revision` is not a Hub revision (a branch or tag name, `refs/pr/N`, or a commit hash), else None. huggingface_hub
    joins it to cache paths (`refs/REVISION`), where `../../x` or `/etc` would read files outside the cache; git's ref-name
    rules rule those out."""
    if not revision or not revision.strip():
        return "is empty"
    parts = revision.split("/")
    if revision.startswith("/"):
        return "starts with '/': a path, not a revision"
    if ".." in revision:
        return "contains '..': a path, not a revision"
    if revision.endswith("/") or "" in parts:
        return "has an empty path part (a leading, trailing or double /)"
    if any(p.startswith(".") or p.endswith(".lock") for p in parts):
        return "has a part that starts with '.' or ends in '.lock'"
    bad = sorted({c for c in revision if c in _BAD_REVISION_CHARS or ord(c) < 32 or ord(c) == 127})
    if bad or "@{" in revision or revision.endswith("."):
        return f"has characters a git revision cannot have ({''.join(bad) or '@{ or a final .'!r})"
    return None


def hub_snapshot(
    repo_id: str,
    revision: str | None,
    patterns: tuple[str, ...] | None = None,
    repo_type: str = "model",
    field: str = "backbone.path",
    error: type[AdapterkitError] = AdapterkitError,
) -> Path:
    """The local snapshot folder of a Hub repository: from the cache (only there when HF_HUB_OFFLINE=1 is set),
    downloaded otherwise. Its folder name is the commit it resolved to."""
    problem = revision_problem(revision) if revision is not None else None
    if problem:
        raise error(
            f"{field.rpartition('.')[0]}.revision: {revision!r} {problem}; expected a branch or tag "
            f"name (main, v1.0, refs/pr/1) or a commit hash"
        )
    folder = _snapshot(repo_id, revision, patterns, repo_type, field, error, cache_dir(), offline())  # type: ignore[arg-type]  # classes hash
    if not folder.is_dir():  # removed from the cache since this process looked it up: look again
        _snapshot.cache_clear()
        folder = _snapshot(repo_id, revision, patterns, repo_type, field, error, cache_dir(), offline())  # type: ignore[arg-type]
    return folder


@functools.cache  # one look-up per repository and cache: backbone loading asks several times
def _snapshot(repo_id, revision, patterns, repo_type, field, error, cache, is_offline) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                repo_type=repo_type,
                cache_dir=cache,
                allow_patterns=list(patterns) if patterns else None,
            )
        )
    except RevisionNotFoundError:
        raise error(f"{field.rpartition('.')[0]}.revision: {revision!r} is not a revision of {repo_id!r}") from None
    except RepositoryNotFoundError:
        raise error(
            f"{field}: {repo_id!r} is neither a local folder nor a {repo_type} on the Hugging Face Hub"
        ) from None
    except LocalEntryNotFoundError:
        how = (
            "HF_HUB_OFFLINE=1 is set, so only the local cache is read"
            if is_offline
            else "and the Hub could not be reached"
        )
        at = f" at revision {revision!r}" if revision else ""
        raise error(
            f"{field}: {repo_id!r}{at} is not a local folder and not in the Hugging Face cache {cache_location()}; "
            f"{how}; download it once (hf download {repo_id}{f' --revision {revision}' if revision else ''}"
            f"{' --repo-type dataset' if repo_type == 'dataset' else ''}) or check the name"
        ) from None
    except (HfHubHTTPError, OSError) as e:
        raise error(
            f"{field}: cannot fetch {repo_id!r} from the Hugging Face Hub: {str(e).splitlines()[0][:160]}"
        ) from None
