"""TokenCache's own contract, found weak by `make mutation` (mutmut on auth/cache.py).

The provider re-checks the cache under the lock, so a broken fast path or a lock that does not
exclude still hands out a right token; these tests look at the cache itself.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from airflow_provider_iceprod.auth.cache import TokenCache
from airflow_provider_iceprod.auth.tokens import AccessToken, fingerprint
from airflow_provider_iceprod.exceptions import IceProdTransientError

KEY = ("issuer", "client", "fingerprint")
OTHER = ("issuer", "client", "other")


def _token(expires_at: float) -> AccessToken:
    return AccessToken(value="t", expires_at=expires_at, obtained_at=0.0)


def test_fresh_returns_the_token_of_that_key_until_the_lead_time() -> None:
    cache = TokenCache()
    assert cache.fresh(KEY, 120.0, now=0.0) is None  # nothing cached
    token = _token(1000.0)
    cache.entry(KEY).access = token
    assert cache.fresh(KEY, 120.0, now=0.0) is token
    assert cache.fresh(KEY, 120.0, now=879.0) is token
    assert cache.fresh(KEY, 120.0, now=881.0) is None  # within the lead time of its expiry
    assert cache.fresh(OTHER, 120.0, now=0.0) is None  # another credential


def test_invalidate_drops_the_access_token_and_keeps_the_refresh_token() -> None:
    cache = TokenCache()
    entry = cache.entry(KEY)
    entry.access, entry.refresh_token = _token(1000.0), "refresh"
    cache.invalidate(KEY)
    cache.invalidate(OTHER)  # unknown key: nothing to do, no error
    assert cache.entry(KEY).access is None
    assert cache.entry(KEY).refresh_token == "refresh"
    assert cache.fresh(KEY, 0.0, now=0.0) is None


def test_invalidate_remembers_the_dropped_token_so_it_is_never_taken_over_again() -> None:
    """The provider compares a shared (overlay) access token with ``rejected``: the token the API
    just refused must not come back from another process's overlay."""
    cache = TokenCache()
    entry = cache.entry(KEY)
    entry.access = AccessToken(value="refused-token", expires_at=1000.0, obtained_at=0.0)
    cache.invalidate(KEY)
    assert entry.rejected == fingerprint("refused-token") != ""
    cache.invalidate(KEY)  # nothing cached any more: the rejected token stays remembered
    assert entry.rejected == fingerprint("refused-token")
    assert cache.entry(OTHER).rejected == ""


def test_a_held_lock_times_out_with_a_final_transient_error() -> None:
    cache = TokenCache()
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with cache.locked(KEY):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    try:
        with (
            pytest.raises(IceProdTransientError, match="Timed out after 0 s waiting for another") as info,
            cache.locked(KEY, timeout=0.1),
        ):
            pass
        assert info.value.attempts == 1  # type: ignore[attr-defined]  # no transport retry on top
        with cache.locked(OTHER, timeout=0.1):  # other keys are not blocked
            pass
    finally:
        release.set()
        thread.join(10)


async def test_coroutines_take_the_lock_one_at_a_time() -> None:
    cache = TokenCache()
    inside = 0
    most = 0

    async def worker() -> None:
        nonlocal inside, most
        async with cache.alocked(KEY):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(worker() for _ in range(10)))
    assert most == 1
