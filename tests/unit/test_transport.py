"""``airflow_provider_iceprod.transport``: clients, their lifetime, and the request path."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from airflow_provider_iceprod.hooks.iceprod import IceProdHook
from airflow_provider_iceprod.transport import shared_async_client


@pytest.fixture
def ip(iceprod_connection, monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator:
    monkeypatch.setenv("AIRFLOW_ICEPROD_LOCK_DIR", str(tmp_path / "locks"))
    yield iceprod_connection


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_a_new_event_loop_per_call_leaks_no_descriptors(ip) -> None:
    """Issue 13 #6: ``asyncio.run(hook.aget_dataset(...))`` in a loop (scripts, notebooks)."""
    dataset_id = ip.create_dataset({"version": 3.2, "tasks": []}, description="fds")
    hook = IceProdHook(retry_delay=0.01)
    asyncio.run(hook.aget_dataset(dataset_id))  # warm up: settings, token, imports
    before = _open_fds()
    for _ in range(200):
        assert asyncio.run(hook.aget_dataset(dataset_id)).dataset_id == dataset_id
    leaked = _open_fds() - before
    assert leaked < 20, f"{leaked} descriptors left open after 200 event loops (was ~400)"


def test_a_loops_clients_are_closed_when_it_ends(ip) -> None:
    async def client():
        return await shared_async_client(ip.api_url)

    first = asyncio.run(client())
    assert first.is_closed
    assert asyncio.run(client()) is not first


def test_clients_are_reused_within_a_loop_and_closed_by_its_shutdown(ip) -> None:
    """A loop run by hand: one client while it runs, closed by ``shutdown_asyncgens``."""
    loop = asyncio.new_event_loop()
    try:
        client = loop.run_until_complete(shared_async_client(ip.api_url))
        assert not client.is_closed
        assert loop.run_until_complete(shared_async_client(ip.api_url)) is client
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    assert client.is_closed


def test_concurrent_first_calls_of_a_loop_share_one_client_built_off_the_loop(ip, monkeypatch) -> None:
    """The first calls of a loop wait for one client, built in a worker thread (its SSL context
    takes 10-20 ms of CPU), not one each, and not on the event loop's thread."""
    import threading

    import httpx

    from airflow_provider_iceprod import transport

    built_on: list[str] = []
    original_init = httpx.AsyncClient.__init__

    def recording_init(self, *args, **kwargs):  # the real constructor; only notes the thread
        built_on.append(threading.current_thread().name)
        original_init(self, *args, **kwargs)

    async def first_calls() -> tuple[set[int], dict]:
        clients = await asyncio.gather(*(shared_async_client(ip.api_url) for _ in range(20)))
        return {id(c) for c in clients}, dict(transport._loop_clients[asyncio.get_running_loop()].building)

    monkeypatch.setattr(httpx.AsyncClient, "__init__", recording_init)
    ids, building = asyncio.run(first_calls())
    assert len(ids) == 1
    assert building == {}
    assert len(built_on) == 1 and built_on[0] != threading.main_thread().name


def test_a_call_that_succeeds_at_once_builds_no_retry_policy_and_a_failed_one_still_retries(
    ip, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15: per-call work that need not repeat; the retry policy is unchanged when it is needed."""
    from airflow_provider_iceprod import transport

    built = {"sync": 0, "async": 0}
    real_sync, real_async = transport.retrying, transport.aretrying

    def counting_sync(*args, **kwargs):
        built["sync"] += 1
        return real_sync(*args, **kwargs)

    def counting_async(*args, **kwargs):
        built["async"] += 1
        return real_async(*args, **kwargs)

    monkeypatch.setattr(transport, "retrying", counting_sync)
    monkeypatch.setattr(transport, "aretrying", counting_async)
    dataset_id = ip.create_dataset({"version": 3.2, "tasks": []}, description="fast path")
    hook = IceProdHook(retry_delay=0.01)

    async def calls() -> None:
        for _ in range(20):
            await hook.aget_dataset(dataset_id)

    for _ in range(20):
        hook.get_dataset(dataset_id)
    asyncio.run(calls())
    assert built == {"sync": 0, "async": 0}

    ip.faults.add(r"^GET /datasets/\{dataset_id\}$", status=503, times=2)
    ip.reset_counters()
    assert hook.get_dataset(dataset_id).dataset_id == dataset_id  # two 503s, then the answer
    assert ip.counters.get("GET /datasets/{dataset_id}") == 3
    ip.faults.add(r"^GET /datasets/\{dataset_id\}$", status=503, times=2)
    assert asyncio.run(hook.aget_dataset(dataset_id)).dataset_id == dataset_id
    assert ip.counters.get("GET /datasets/{dataset_id}") == 6
    assert built == {"sync": 1, "async": 1}


def test_concurrent_async_calls_share_a_few_keep_alive_connections(ip) -> None:
    """Issue 15: 300 concurrent async calls wait at the in-flight gate and reuse the loop's pool
    (at most ``ASYNC_POOL_SIZE`` connections, counted by the stand-in), never a connection per call."""
    from airflow_provider_iceprod.transport import ASYNC_POOL_SIZE

    dataset_id = ip.create_dataset({"version": 3.2, "tasks": []}, description="pool")
    hook = IceProdHook(retry_delay=0.01)
    hook.get_dataset(dataset_id)  # the token, outside the count
    ip.reset_counters()

    async def calls() -> None:
        for _ in range(3):
            results = await asyncio.gather(*(hook.aget_dataset(dataset_id) for _ in range(100)))
            assert {r.dataset_id for r in results} == {dataset_id}

    asyncio.run(calls())
    assert ip.counters.get("GET /datasets/{dataset_id}") == 300
    assert 1 <= ip.counters.connections <= ASYNC_POOL_SIZE

    ip.reset_counters()
    for _ in range(50):
        hook.get_dataset(dataset_id)
    assert ip.counters.get("GET /datasets/{dataset_id}") == 50
    assert ip.counters.connections <= 1  # one keep-alive connection (already open after the warm-up)
