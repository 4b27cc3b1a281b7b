"""A cross-process advisory lock (``flock``) around refresh-token grants on one host.

With single-use refresh tokens, two worker processes refreshing with the same token at once would
make one of them fail with ``invalid_grant``. Processes on the same host serialise their refreshes on
a lock file; after taking it they re-read the overlay, so each uses the newest token. Processes on
other hosts are covered by the ``invalid_grant`` -> re-read -> retry path in the provider.

The lock directory is ``$AIRFLOW_ICEPROD_LOCK_DIR`` or ``<tmp>/airflow-iceprod-<uid>`` (mode 0700); set
``AIRFLOW_ICEPROD_LOCK_DIR=off`` to disable. Like ssh, a directory that is not ours, is a symlink or is
open to other users is not used: the provider warns and refreshes without the lock (another local
user could otherwise stall every refresh). Lock files are opened with ``O_NOFOLLOW`` and hold no
secret: their names are hashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import stat
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

log = logging.getLogger(__name__)


_warned: set[str] = set()


def _warn_once(path: Path, why: str) -> None:
    if str(path) not in _warned:
        _warned.add(str(path))
        log.warning(
            "IceProd token refreshes run without the cross-process lock: the lock directory %s %s. "
            "Remove it (it is recreated with mode 0700) or set %s to a private directory.",
            path,
            why,
            LOCK_DIR_ENV,
        )


def _is_private(path: Path) -> bool:
    """Like ssh: the directory must be ours, not a symlink, and closed to group and others (0700)."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        _warn_once(path, f"cannot be read ({exc.strerror})")
        return False
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        _warn_once(path, "is not a directory (or is a symlink)")
        return False
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        _warn_once(path, f"belongs to another user (uid {info.st_uid})")
        return False
    if stat.S_IMODE(info.st_mode) & 0o077:
        _warn_once(path, f"is open to other users (mode {stat.S_IMODE(info.st_mode):04o}, needs 0700)")
        return False
    return True


def lock_dir() -> Path | None:
    """Where lock files live, or None when cross-process locking is off, unavailable or unsafe."""
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
    return path if _is_private(path) else None


def _open_lock_file(path: Path) -> int | None:
    """The lock file's descriptor; never follows a symlink planted in its place (None then)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        _warn_once(path, f"holds a lock file that cannot be opened safely ({exc.strerror})")
        return None


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


def _lock_attempts(fd: int | None, timeout: float) -> Iterator[float]:
    """Try the lock until it is taken; yield how long to wait before each next try (capped backoff).

    Shared by :func:`file_lock` and :func:`afile_lock`, which differ only in how they wait. No
    descriptor (no safe lock file here) means no lock to take.
    """
    if fd is None:
        return
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
def _opened(path: Path | None) -> Iterator[int | None]:
    """The lock file's descriptor for the block (None: no safe lock file), closed afterwards."""
    fd = _open_lock_file(path) if path is not None else None
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


@contextlib.contextmanager
def _unlocking(fd: int | None) -> Iterator[None]:
    """Release the (taken) lock on ``fd`` when the block ends."""
    try:
        yield
    finally:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def file_lock(path: Path | None, timeout: float = 120.0) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (no-op when ``path`` is None)."""
    with _opened(path) as fd:
        for pause in _lock_attempts(fd, timeout):
            time.sleep(pause)
        with _unlocking(fd):
            yield


@contextlib.asynccontextmanager
async def afile_lock(path: Path | None, timeout: float = 120.0) -> AsyncIterator[None]:
    """Async form of :func:`file_lock`: waits with ``asyncio.sleep``, never blocking the loop."""
    with _opened(path) as fd:
        for pause in _lock_attempts(fd, timeout):
            await asyncio.sleep(pause)
        with _unlocking(fd):
            yield
