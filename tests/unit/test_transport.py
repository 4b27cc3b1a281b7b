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
