"""`adapterkit serve`: the run pool behind uvicorn. Loopback by default; any other address needs an API key.
SIGTERM or Ctrl-C stops accepting connections, lets the requests in flight finish, and exits 0 (uvicorn's own
graceful shutdown; the batcher then drains its queue)."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import signal
import socket

from ..console import echo
from ..errors import AdapterkitError
from ..inference.pool import open_pool
from .app import ServeSettings, create_app

API_KEY_ENV = "ADAPTERKIT_API_KEY"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_bind(host: str, api_key: str | None) -> None:
    if not is_loopback(host) and not api_key:
        raise AdapterkitError(
            f"--host {host}: not a loopback address, so other machines could reach the server; give --api-key KEY "
            f"(or set {API_KEY_ENV}) to require it on every request"
        )


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise AdapterkitError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror or e})") from None
    return sock


def serve(
    runs: list[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServeSettings = ServeSettings(),
    quantization=None,
) -> None:
    import uvicorn

    settings = dataclasses.replace(settings, api_key=settings.api_key or os.environ.get(API_KEY_ENV))
    check_bind(host, settings.api_key)
    sock = listening_socket(host, port)  # before the base loads: a port in use is one line, at once
    pool = open_pool(runs, quantization)
    app = create_app(pool, settings)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    echo(f"serving {', '.join(pool.names())} on http://{host}:{port} (SIGTERM or Ctrl-C stops)")
    # uvicorn re-sends the stopping signal to the handlers it found once it has shut down gracefully: these make
    # that a no-op, so a graceful stop exits 0 instead of dying of the signal.
    before = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    except SystemExit:  # uvicorn's exit when it cannot start
        raise AdapterkitError(f"serve: the server on {host}:{port} could not start; see the lines above") from None
    finally:
        app.state.batcher.stop()
        for s, handler in before.items():
            signal.signal(s, handler)
    echo("stopped: every request in flight was answered")
