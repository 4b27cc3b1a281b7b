"""The process-wide access-token cache: one grant per token lifetime, shared, thread- and asyncio-safe."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest
from auth_helpers import FAST_RETRY, settings_for

from airflow_provider_iceprod.auth.cache import TokenCache
from airflow_provider_iceprod.auth.provider import TokenProvider
from airflow_provider_iceprod.auth.state import MemoryTokenStateStore
from airflow_provider_iceprod.auth.tokens import AccessToken
from airflow_provider_iceprod.testing import LocalIceProd

TOKEN_ROUTE = r"/protocol/openid-connect/token"


def provider(ip: LocalIceProd, token: str, **kw) -> TokenProvider:
    kw.setdefault("state_store", MemoryTokenStateStore())
    return TokenProvider(settings_for(ip, token), retry=FAST_RETRY, **kw)


def test_thousand_calls_in_one_lifetime_cost_one_grant(idp: LocalIceProd) -> None:
    p = provider(idp, idp.issue_refresh_token("alice"))
    tokens = {p.get_token() for _ in range(1000)}
    assert len(tokens) == 1
    assert idp.counters.grants["refresh_token"] == 1


def test_every_provider_of_a_connection_shares_the_cache(idp: LocalIceProd) -> None:
    token = idp.issue_refresh_token("alice")
    first = provider(idp, token).get_token()
    assert all(provider(idp, token).get_token() == first for _ in range(20))
    assert idp.counters.grants["refresh_token"] == 1


def test_different_credentials_do_not_share(idp: LocalIceProd) -> None:
    a = provider(idp, idp.issue_refresh_token("alice")).get_token()
    b = provider(idp, idp.issue_refresh_token("bob")).get_token()
    assert a != b
    assert idp.counters.grants["refresh_token"] == 2


def test_lead_time_is_120_seconds_capped_at_a_quarter_of_the_lifetime() -> None:
    now = 1_000_000.0
    long_lived = AccessToken(value="x", expires_at=now + 600, obtained_at=now)
    assert long_lived.is_fresh(120, now + 479)
    assert not long_lived.is_fresh(120, now + 481)
    short = AccessToken(value="x", expires_at=now + 120, obtained_at=now)  # lead capped at 30 s
    assert short.is_fresh(120, now + 89)
    assert not short.is_fresh(120, now + 91)


@pytest.mark.parametrize("lifetime", [8, 60, 119])
def test_short_lived_tokens_are_reused_20_calls_are_not_20_grants(lifetime: float) -> None:
    # Before: a token living <= 120 s was always inside the 120 s lead time, so every call refreshed.
    with LocalIceProd(token_lifetime=lifetime, materialize_interval=None) as ip:
        p = provider(ip, ip.issue_refresh_token("alice"))
        for _ in range(20):
            p.get_token()
        assert ip.counters.grants["refresh_token"] == 1


def test_expiry_comes_from_the_local_clock_not_the_issuers() -> None:
    # The issuer's clock is 10 minutes behind this worker's: its "exp" is already in our past. The
    # expiry must come from the receive time plus expires_in, or every call would be a grant.
    import time as _time

    with LocalIceProd(token_lifetime=300, materialize_interval=None) as ip:
        ip.idp.clock = lambda: _time.time() - 600
        p = provider(ip, ip.issue_refresh_token("alice"))
        for _ in range(20):
            p.get_token()
        assert ip.counters.grants["refresh_token"] == 1


def test_short_lived_tokens_with_a_scaled_lead_time() -> None:
    with LocalIceProd(token_lifetime=5, materialize_interval=None) as ip:
        p = provider(ip, ip.issue_refresh_token("alice"), lead_time=1.0)
        first = p.get_token()
        assert p.get_token() == first
        expires_at = p._cache.entry(p.key).access.expires_at
        time.sleep(max(expires_at - 1.0 + 0.1 - time.time(), 0))  # now within the lead time
        assert p.get_token() != first
        assert ip.counters.grants["refresh_token"] == 2


def test_force_refresh_gets_a_new_token(idp: LocalIceProd) -> None:
    p = provider(idp, idp.issue_refresh_token("alice"))
    first = p.get_token()
    assert p.get_token(force_refresh=True) != first
    assert idp.counters.grants["refresh_token"] == 2


def test_concurrent_threads_cause_one_grant(idp: LocalIceProd) -> None:
    idp.faults.add(TOKEN_ROUTE, latency=0.3)  # a slow token endpoint widens the race
    token = idp.issue_refresh_token("alice")
    results: list[str] = []
    barrier = threading.Barrier(16)

    def work() -> None:
        barrier.wait()
        results.append(provider(idp, token).get_token())

    threads = [threading.Thread(target=work) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 16 and len(set(results)) == 1
    assert idp.counters.grants["refresh_token"] == 1


def test_concurrent_forced_refreshes_coalesce(idp: LocalIceProd) -> None:
    # Many requests see "403 authentication failed" at once and all ask for a forced refresh:
    # the ones that waited for the lock reuse the token minted after they asked.
    idp.faults.add(TOKEN_ROUTE, latency=0.2)
    p = provider(idp, idp.issue_refresh_token("alice"))
    p.get_token()
    barrier = threading.Barrier(8)
    results: list[str] = []

    def work() -> None:
        barrier.wait()
        results.append(p.get_token(force_refresh=True))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 8
    assert idp.counters.grants["refresh_token"] <= 3  # 1 initial + 1 (or 2 if a thread was late)


async def test_concurrent_coroutines_cause_one_grant(idp: LocalIceProd) -> None:
    idp.faults.add(TOKEN_ROUTE, latency=0.3)
    token = idp.issue_refresh_token("alice")
    results = await asyncio.gather(*(provider(idp, token).aget_token() for _ in range(50)))
    assert len(set(results)) == 1
    assert idp.counters.grants["refresh_token"] == 1


async def test_waiting_for_a_threads_refresh_does_not_block_the_loop(idp: LocalIceProd) -> None:
    """A coroutine that asks while a thread refreshes waits for that refresh (no second grant) and
    gets its token, and the event loop keeps running meanwhile. Ordered by counters, not by clocks."""
    idp.faults.add(TOKEN_ROUTE, latency=3.0)
    token = idp.issue_refresh_token("alice")
    p = provider(idp, token)
    thread_result: list[str] = []
    thread = threading.Thread(target=lambda: thread_result.append(p.get_token()))
    thread.start()
    # the thread's token request has reached the issuer and no token is out yet: it holds the lock
    while idp.counters.matching(TOKEN_ROUTE) < 1:
        await asyncio.sleep(0.01)
    assert idp.counters.grants["refresh_token"] == 0

    stamps: list[float] = []

    async def ticker() -> None:
        while True:
            stamps.append(time.monotonic())
            await asyncio.sleep(0.02)

    tick_task = asyncio.create_task(ticker())
    value = await p.aget_token()
    # by the time the coroutine has a token, the thread's grant exists: it waited for it
    assert idp.counters.grants["refresh_token"] == 1
    tick_task.cancel()
    await asyncio.to_thread(thread.join, 10)
    assert thread_result == [value]  # the thread's token, not one of its own
    assert idp.counters.matching(TOKEN_ROUTE) == 1  # the coroutine sent no token request
    # the loop kept ticking during the ~3 s wait (a blocked loop shows one gap of seconds)
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(stamps) >= 10 and max(gaps) < 1.5


async def test_threads_and_coroutines_together_cause_one_grant(idp: LocalIceProd) -> None:
    idp.faults.add(TOKEN_ROUTE, latency=0.3)
    token = idp.issue_refresh_token("alice")
    thread_results: list[str] = []
    threads = [
        threading.Thread(target=lambda: thread_results.append(provider(idp, token).get_token()))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    results = await asyncio.gather(*(provider(idp, token).aget_token() for _ in range(10)))
    for t in threads:
        await asyncio.to_thread(t.join, 10)
    assert len(set(results) | set(thread_results)) == 1
    assert idp.counters.grants["refresh_token"] == 1


async def test_cancelled_waiter_does_not_leave_the_lock_held(idp: LocalIceProd) -> None:
    cache = TokenCache()
    key = ("issuer", "client", "fp")
    entered = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with cache.alocked(key):
            entered.set()
            await release.wait()

    hold = asyncio.create_task(holder())
    await entered.wait()
    waiter = asyncio.create_task(cache.alocked(key).__aenter__())
    await asyncio.sleep(0.05)
    waiter.cancel()
    release.set()
    await hold
    with cache.locked(key, timeout=1):  # neither task left it held
        pass
