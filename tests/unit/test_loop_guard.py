"""Issue 13 #5: a blocking hook call on a running event loop fails at once, naming the async method."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from airflow_provider_iceprod.exceptions import IceProdConfigError
from airflow_provider_iceprod.hooks.iceprod import IceProdHook
from airflow_provider_iceprod.loop_guard import refuse_running_loop

TOKEN_ROUTE = r"/protocol/openid-connect/token"


@pytest.fixture
def ip(iceprod_connection, monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator:
    monkeypatch.setenv("AIRFLOW_ICEPROD_LOCK_DIR", str(tmp_path / "locks"))
    from airflow_provider_iceprod.auth.cache import TOKEN_CACHE

    TOKEN_CACHE.clear()
    yield iceprod_connection
    TOKEN_CACHE.clear()


def test_no_running_loop_is_fine() -> None:
    refuse_running_loop("anything")  # plain scripts, tasks, worker threads


async def test_sync_call_on_the_loop_names_the_async_twin(ip) -> None:
    hook = IceProdHook(retry_delay=0.01)
    await hook.aget_settings()
    with pytest.raises(IceProdConfigError, match=r"await IceProdHook\.aget_dataset\(") as info:
        hook.get_dataset(1)
    assert "running event loop" in str(info.value)
    with pytest.raises(IceProdConfigError, match=r"await IceProdHook\.awhoami\("):
        hook.whoami()
    assert ip.counters.total() == 0  # refused before anything was sent


async def test_sync_call_fails_at_once_while_a_coroutine_refreshes(ip) -> None:
    """Before: the sync call blocked the loop on the refresh lock that the coroutine held, 120 s."""
    ip.faults.add(TOKEN_ROUTE, latency=0.5, times=1)  # a slow issuer keeps the refresh lock busy
    hook = IceProdHook(retry_delay=0.01)
    await hook.aget_settings()
    refresh = asyncio.create_task(hook.awhoami())
    await asyncio.sleep(0.1)  # the coroutine now holds the refresh lock
    started = time.monotonic()
    with pytest.raises(IceProdConfigError, match="aget_dataset"):
        hook.get_dataset(1)
    refused_after = time.monotonic() - started
    me = await refresh
    assert me.username == "alice"
    assert refused_after < 5  # generous: the lock timeout it used to wait out is 120 s


async def test_the_same_call_in_a_worker_thread_works(ip) -> None:
    hook = IceProdHook(retry_delay=0.01)
    me = await asyncio.to_thread(hook.whoami)
    assert me.username == "alice"
