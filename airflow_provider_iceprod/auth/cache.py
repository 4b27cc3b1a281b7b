"""The process-wide access-token cache.

One entry per ``(issuer, client_id, fingerprint of the base credential)``, shared by every hook,
operator and trigger in the process. Refreshes of one entry run one at a time:

* threads take the entry's ``threading.Lock`` (with a bounded wait, never forever);
* coroutines first take an ``asyncio.Lock`` for their event loop (so a loop's coroutines queue without
  spinning), then take the same thread lock **without blocking the loop** (non-blocking attempts with
  short ``asyncio.sleep`` pauses), which also makes the wait cancellation-safe.

Callers re-check the entry after acquiring (double-checked locking), so N concurrent callers cause one
grant.
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

from airflow_provider_iceprod.auth.tokens import AccessToken, fingerprint
from airflow_provider_iceprod.exceptions import IceProdTransientError

CacheKey = tuple[str, str, str]  # (issuer, client_id, credential fingerprint)

#: Longest a caller waits for another caller's refresh before giving up (bounded, never a hang).
LOCK_TIMEOUT = 120.0


def _lock_timeout(timeout: float) -> IceProdTransientError:
    exc = IceProdTransientError(
        f"Timed out after {timeout:.0f} s waiting for another IceProd token refresh in this process."
    )
    exc.attempts = 1  # type: ignore[attr-defined]  # final: no transport retries it again
    return exc


@dataclass
class CacheEntry:
    """What the process knows about one credential. Mutated only under the entry's lock."""

    access: AccessToken | None = None
    refresh_token: str | None = field(default=None, repr=False)  # newest refresh token seen in this process
    refresh_saved_at: float | None = None  # when that refresh token was issued/saved (epoch s)
    refresh_generation: int = 0  # rotations of that refresh token since the login
    unsaved_rotation: bool = False  # the last rotated refresh token could not be persisted
    refreshed_at_monotonic: float = 0.0  # time.monotonic() of the last successful grant
    last_refresh_at: float | None = None  # epoch s of the last successful grant
    source: str = ""  # where the refresh token used last came from: connection | overlay | memory
    grants: int = 0  # successful grants in this process
    adopted: int = 0  # access tokens taken over from another process through the overlay
    rejected: str = ""  # fingerprint of the last access token dropped by invalidate(): not taken over


class TokenCache:
    def __init__(self) -> None:
        self._entries: dict[CacheKey, CacheEntry] = {}
        self._thread_locks: dict[CacheKey, threading.Lock] = {}
        self._loop_locks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[CacheKey, asyncio.Lock]
        ] = weakref.WeakKeyDictionary()
        self._guard = threading.Lock()

    def entry(self, key: CacheKey) -> CacheEntry:
        with self._guard:
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = CacheEntry()
            return entry

    def fresh(self, key: CacheKey, lead_time: float, now: float | None = None) -> AccessToken | None:
        """The cached access token if it has more than ``lead_time`` seconds left (no lock needed)."""
        entry = self._entries.get(key)
        token = entry.access if entry is not None else None
        if token is not None and token.is_fresh(lead_time, now):
            return token
        return None

    def _thread_lock(self, key: CacheKey) -> threading.Lock:
        with self._guard:
            lock = self._thread_locks.get(key)
            if lock is None:
                lock = self._thread_locks[key] = threading.Lock()
            return lock

    def _loop_lock(self, key: CacheKey) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._guard:
            locks = self._loop_locks.get(loop)
            if locks is None:
                locks = self._loop_locks[loop] = {}
            lock = locks.get(key)
            if lock is None:
                lock = locks[key] = asyncio.Lock()
            return lock

    @contextmanager
    def locked(self, key: CacheKey, timeout: float = LOCK_TIMEOUT) -> Iterator[CacheEntry]:
        """Hold ``key``'s refresh lock (threads). Raises if another refresh holds it past ``timeout``."""
        lock = self._thread_lock(key)
        if not lock.acquire(timeout=timeout):
            raise _lock_timeout(timeout)
        try:
            yield self.entry(key)
        finally:
            lock.release()

    @asynccontextmanager
    async def alocked(self, key: CacheKey, timeout: float = LOCK_TIMEOUT) -> AsyncIterator[CacheEntry]:
        """Hold ``key``'s refresh lock from a coroutine, never blocking the event loop."""
        deadline = time.monotonic() + timeout
        async with self._loop_lock(key):
            lock = self._thread_lock(key)
            pause = 0.002
            while not lock.acquire(blocking=False):
                if time.monotonic() >= deadline:
                    raise _lock_timeout(timeout)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.05)
            try:
                yield self.entry(key)
            finally:
                lock.release()

    def invalidate(self, key: CacheKey) -> None:
        """Drop the cached access token (the refresh token stays known) and never take it over again."""
        entry = self._entries.get(key)
        if entry is not None:
            if entry.access is not None:
                entry.rejected = fingerprint(entry.access.value)
            entry.access = None

    def clear(self) -> None:
        """Forget everything (tests and benchmarks)."""
        with self._guard:
            self._entries.clear()


#: The one cache of this process.
TOKEN_CACHE = TokenCache()
