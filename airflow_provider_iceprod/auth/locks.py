"""A cross-process advisory lock (``flock``) around refresh-token grants on one host.

With single-use refresh tokens, two worker processes refreshing with the same token at once would
make one of them fail with ``invalid_grant``. Processes on the same host serialise their refreshes on
a lock file; after taking it they re-read the overlay, so each uses the newest token. Processes on
other hosts are covered by the ``invalid_grant`` -> re-read -> retry path in the provider.

The lock directory is ``$AIRFLOW_ICEPROD_LOCK_DIR`` or ``<tmp>/airflow-iceprod-<uid>`` (mode 0700); set
``AIRFLOW_ICEPROD_LOCK_DIR=off`` to disable. Lock files hold no secret: their names are hashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from airflow_provider_iceprod.exceptions import IceProdTransientError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

LOCK_DIR_ENV = "AIRFLOW_ICEPROD_LOCK_DIR"


def lock_dir() -> Path | None:
    """Where lock files live, or None when cross-process locking is off or unavailable."""
    if fcntl is None:
        return None
    configured = os.environ.get(LOCK_DIR_ENV, "").strip()
    if configured.lower() in ("off", "none", "0", "false"):
        return None
    uid = os.getuid() if hasattr(os, "getuid") else 0
    path = Path(configured) if configured else Path(tempfile.gettempdir()) / f"airflow-iceprod-{uid}"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return None
    return path


def lock_path(name: str) -> Path | None:
    directory = lock_dir()
    if directory is None:
        return None
    return directory / (hashlib.sha256(name.encode()).hexdigest()[:32] + ".lock")


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _lock_attempts(fd: int, timeout: float) -> Iterator[float]:
    """Try the lock until it is taken; yield how long to wait before each next try (capped backoff).

    Shared by :func:`file_lock` and :func:`afile_lock`, which differ only in how they wait.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    while not _try_lock(fd):
        if time.monotonic() >= deadline:
            raise _timeout_error(timeout)
        yield pause
        pause = min(pause * 2, 0.1)


def _timeout_error(timeout: float) -> IceProdTransientError:
    exc = IceProdTransientError(
        f"Timed out after {timeout:.0f} s waiting for another process's IceProd token refresh on this host."
    )
    exc.attempts = 1  # type: ignore[attr-defined]  # final: no transport retries it again
    return exc


@contextlib.contextmanager
def file_lock(path: Path | None, timeout: float = 120.0) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (no-op when ``path`` is None)."""
    if path is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        for pause in _lock_attempts(fd, timeout):
            time.sleep(pause)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def afile_lock(path: Path | None, timeout: float = 120.0) -> AsyncIterator[None]:
    """Async form of :func:`file_lock`: waits with ``asyncio.sleep``, never blocking the loop."""
    if path is None:
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        for pause in _lock_attempts(fd, timeout):
            await asyncio.sleep(pause)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
