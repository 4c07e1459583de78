"""Where a search's Optuna study lives: OUT/study.db (SQLite) by default, or the database `tune --storage URL` names
(PostgreSQL, MySQL, SQLite: any URL Optuna's RDBStorage takes) for one search shared by processes on several
machines. A URL that cannot be used is one line naming --storage, its password masked. Every process records a
heartbeat for the trial it runs, so a trial whose process died (SIGKILL, a lost machine) is failed by the others
after the grace period, and `on_stale` queues its settings again."""

from __future__ import annotations

import importlib.util
import os
import re
import warnings
from collections.abc import Callable
from typing import Any

from ..errors import RecipeError

HEARTBEAT_ENV = "ADAPTERKIT_TUNE_HEARTBEAT"
HEARTBEAT_SECONDS = 30  # a write every 30 s per running trial; a dead process's trial is retried after 2 minutes
GRACE_FACTOR = 4  # heartbeats a process may miss (a busy machine, a slow database) before its trial is failed
MAX_HEARTBEAT = 3600
CONNECT_TIMEOUT = 10  # seconds: a wrong host or a closed port is an error soon, not after the OS's minutes


def masked(url: str) -> str:
    """The URL as it may be printed: the password replaced by ***."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy parses: hide whatever sits between `user:` and `@`
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def driver_url(url: str) -> str:
    """`postgresql://` names SQLAlchemy's default driver, psycopg2; the psycopg 3 that `adapterkit[postgres]`
    installs serves it instead. A URL naming its driver (`postgresql+psycopg2://`) is kept as it is."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        u = make_url(url)
    except (ArgumentError, ValueError):
        return url  # connect() says what is wrong with it
    if u.drivername == "postgresql" and importlib.util.find_spec("psycopg") is not None:
        return u.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def engine_kwargs(url: str) -> dict[str, Any]:
    from sqlalchemy.engine import make_url

    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        return {"connect_args": {"timeout": 120}}  # wait out another process's write instead of failing
    if backend in ("postgresql", "mysql", "mariadb"):
        # pre-ping: a trial can run for hours while the pool's idle connection is dropped by the server
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}, "pool_pre_ping": True}
    return {}


def heartbeat_seconds() -> int:
    """ADAPTERKIT_TUNE_HEARTBEAT, read when a search starts: the study keeps it, and processes that join use it."""
    raw = os.environ.get(HEARTBEAT_ENV)
    if raw is None:
        return HEARTBEAT_SECONDS
    value = int(raw) if raw.strip().isdigit() else 0
    if not 1 <= value <= MAX_HEARTBEAT:
        raise RecipeError(f"{HEARTBEAT_ENV}={raw!r}: expected a whole number of seconds from 1 to {MAX_HEARTBEAT}")
    return value


def connect(
    url: str,
    option: str,
    shown: str,
    heartbeat: int | None = None,
    on_stale: Callable[[Any, Any], None] | None = None,
):
    """Optuna's RDBStorage for `url`, connected and its tables made; any problem is a RecipeError naming `option`."""
    import optuna
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    beat: dict[str, Any] = {}
    if heartbeat is not None:
        beat = {
            "heartbeat_interval": heartbeat,
            "grace_period": GRACE_FACTOR * heartbeat,
            "heartbeat_stale_trial_callback": on_stale,
        }
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), **beat)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, RuntimeError, ValueError) as e:
        raise RecipeError(f"{option} {shown}: {_reason(e, url)}") from None


def _reason(e: BaseException, url: str) -> str:
    """What went wrong, in a few words: the driver's first line (never the password)."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    if isinstance(e, sqlalchemy.exc.NoSuchModuleError):
        return f"unknown database or driver name {url.split(':', 1)[0]!r}"
    if isinstance(e, sqlalchemy.exc.ArgumentError):
        return "not a database URL (dialect[+driver]://user:password@host:port/database)"
    if isinstance(e, ImportError):
        psycopg = url.split(":", 1)[0] in ("postgresql", "postgresql+psycopg")
        hint = "; pip install 'adapterkit[postgres]'" if psycopg else ""
        return f"its database driver is not installed ({e.__cause__ or e}){hint}"
    text = str(getattr(e, "orig", None) or e).strip()
    line = text.splitlines()[0].strip() if text else type(e).__name__
    try:
        password = make_url(url).password
    except (sqlalchemy.exc.ArgumentError, ValueError):
        password = None
    if password:
        line = line.replace(str(password), "***")
    return line[:300]
