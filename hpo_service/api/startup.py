"""Checks and set-up before the server accepts requests (used by `hpo serve`, `hpo db`, `hpo demo`)."""

from __future__ import annotations

import functools
import ipaddress
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hpo_service.db.engine import make_engine, make_session_factory
from hpo_service.db.migrate import check_schema
from hpo_service.errors import InvalidInput
from hpo_service.orchestration.access import AccessService, IssuedToken
from hpo_service.orchestration.context import Context
from hpo_service.settings import Settings


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _access(settings: Settings) -> tuple[AccessService, Context]:
    engine = make_engine(settings.database_url)
    context = Context(engine=engine, sessions=make_session_factory(engine), settings=settings)
    return AccessService(context), context


def write_token_file(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(secret + "\n")


def prepare_server(settings: Settings, host: str) -> Path | None:
    """Refuse an old schema; make sure someone can authenticate.

    On a loopback address with no token yet, create an admin token and write it to
    `settings.token_file` (returned). On any other address with no token, refuse:
    a reachable server without credentials would be open to anyone.
    """
    access, context = _access(settings)
    try:
        check_schema(context.engine)
        if access.token_count() > 0:
            return None
        if not is_loopback(host):
            raise InvalidInput(
                f"refusing to listen on {host} without authentication: no API token exists yet. "
                "Create an admin token first with `hpo db bootstrap-token` (same HPO_DATABASE_URL), "
                "or start once on 127.0.0.1"
            )
        issued = access.bootstrap_admin("local admin (created on first start)")
        write_token_file(settings.token_file, issued.secret)
        return settings.token_file
    finally:
        context.engine.dispose()


def bootstrap_token(settings: Settings, name: str, secret: str | None = None,
                    if_none: bool = False) -> IssuedToken | None:
    """Create an admin token; with ``if_none``, only when the database has no token yet."""
    access, context = _access(settings)
    try:
        check_schema(context.engine)
        if if_none and access.token_count() > 0:
            return None
        return access.bootstrap_admin(name, secret)
    finally:
        context.engine.dispose()


def freeze_startup_heap() -> None:
    """Take what the server allocated while starting (modules, the app, its routes and schemas:
    100k-300k objects) out of the cyclic garbage collector's scans.

    A full collection walks every tracked object; at this size it costs 30-60 ms on a small
    machine, and it runs inside whichever request happens to allocate at that moment (the
    dashboard's views of a big study allocate a lot). Frozen objects are still freed by reference
    counting; only cycles among them would never be collected, and start-up objects live as long
    as the process anyway. Measured in bench/dashboard_scale.py.
    """
    import gc

    gc.collect()
    gc.freeze()


# glibc's mallopt parameter M_ARENA_MAX (malloc.h); the environment's MALLOC_ARENA_MAX, if set, wins.
_M_ARENA_MAX = -8
SERVER_MALLOC_ARENAS = 2
# How often the server hands freed heap memory back to the system (glibc's malloc_trim).
MALLOC_TRIM_SECONDS = 60.0


@functools.cache
def _glibc() -> Any:
    """glibc through ctypes, or None elsewhere (musl, macOS, Windows). Loaded once: finding the
    library runs `ldconfig -p`, and the trimming thread needs it every minute."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = SERVER_MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process; True where it took effect (glibc only).

    glibc gives each thread that allocates concurrently its own arena (up to 8 per core), and the
    API runs its use cases on a pool of threads: arenas fill with fragments that are never handed
    back, and resident memory grew ~13 KB per finished trial segment under bench/load.py while the
    Python heap grew ~1 KB (finding F17, bench/memory_growth.py: 28 of 32 MB in thread arenas;
    two arenas halve the growth). Python's own allocator (pymalloc) does the small objects anyway.
    Must run before the server starts its threads; a no-op where MALLOC_ARENA_MAX is set.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(_M_ARENA_MAX, arenas) == 1)


def trim_malloc() -> bool:
    """Give the free pages inside glibc's heaps back to the system; True where it did (glibc only).

    glibc returns memory to the system only from the top of a heap: freed blocks below the
    highest live one stay resident. A server that builds and drops large responses all day
    (the dashboard's views, JSON bodies) keeps the high-water mark of its fragments as resident
    memory; ``malloc_trim(0)`` releases every free page in every arena (finding F17,
    bench/memory_growth.py prints RSS before and after it). It takes each arena's lock briefly and
    releases the GIL (a ctypes call), so a call a minute costs the requests nothing measurable.
    """
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def start_malloc_trimming(interval_s: float = MALLOC_TRIM_SECONDS) -> threading.Thread | None:
    """``trim_malloc`` every ``interval_s`` seconds on a daemon thread, for the process's life
    (None where it is not glibc). Only `hpo serve` does this: it is the long-lived process."""
    if _glibc() is None:
        return None

    def loop() -> None:
        while True:
            time.sleep(interval_s)
            trim_malloc()

    thread = threading.Thread(target=loop, name="malloc-trim", daemon=True)
    thread.start()
    return thread


def create_served_app() -> object:
    """The app of one `hpo serve --processes N` process (uvicorn's factory), start-up heap frozen."""
    from hpo_service.api.app import create_app

    limit_malloc_arenas()
    app = create_app()
    freeze_startup_heap()
    start_malloc_trimming()
    return app
