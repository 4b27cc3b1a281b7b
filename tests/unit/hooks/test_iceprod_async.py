"""The async forms: same results, concurrent, never blocking the event loop."""

from __future__ import annotations

import asyncio
import time

import pytest
from hook_helpers import CONFIG, FAST, api_requests

from airflow_provider_iceprod.exceptions import IceProdNotFoundError, IceProdTransientError
from airflow_provider_iceprod.hooks.iceprod import IceProdHook
from airflow_provider_iceprod.testing.server import LocalIceProd
from airflow_provider_iceprod.transport import shared_async_client, shared_client

ROUTE = "GET /datasets/{dataset_id}"


async def test_100_concurrent_calls(ip: LocalIceProd, dataset_id: str) -> None:
    hook = IceProdHook(**FAST)  # nothing resolved yet: settings and token come asynchronously
    results = await asyncio.gather(*(hook.aget_dataset(dataset_id) for _ in range(100)))
    assert {r.dataset_id for r in results} == {dataset_id}
    assert ip.counters.get(ROUTE) == 100
    assert api_requests(ip) == {ROUTE: 100}
    assert ip.counters.snapshot()["grants"] == {"refresh_token": 1}  # one grant for 100 callers


async def test_settings_are_resolved_without_the_sync_lookup(
    ip: LocalIceProd, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = IceProdHook(**FAST)

    def no_sync_lookup(conn_id: str) -> None:
        raise AssertionError("sync get_connection called on the event loop")

    monkeypatch.setattr(hook, "get_connection", no_sync_lookup)
    settings = await hook.aget_settings()
    assert settings.api_url == ip.api_url
    assert hook.settings is settings  # the same slot


async def test_async_forms_match_sync_ones(hook: IceProdHook, ip: LocalIceProd, dataset_id: str) -> None:
    number = ip.dataset(dataset_id)["dataset"]
    assert (await hook.aget_dataset(number)).dataset_id == dataset_id
    assert await hook.aresolve_dataset_id(str(number)) == dataset_id
    ip.grid.pause()  # the sync and async reads below must see the same task states
    progress = await hook.adataset_progress(dataset_id)
    assert progress.job_counts == {"processing": 2} and sum(progress.task_counts.values()) == 4
    assert await hook.atask_counts(dataset_id) == await asyncio.to_thread(hook.task_counts, dataset_id)
    assert await hook.ajob_counts(dataset_id) == await asyncio.to_thread(hook.job_counts, dataset_id)
    assert await hook.atask_counts_by_name(dataset_id) == await asyncio.to_thread(
        hook.task_counts_by_name, dataset_id
    )
    assert await hook.alist_tasks(dataset_id, name="generate") == await asyncio.to_thread(
        hook.list_tasks, dataset_id, name="generate"
    )
    assert await hook.aget_config(dataset_id) == await asyncio.to_thread(hook.get_config, dataset_id)
    ip.grid.resume()
    assert dataset_id in await hook.alist_datasets(users="alice")
    await hook.aset_priority(dataset_id, 0.7)
    assert ip.dataset(dataset_id)["priority"] == 0.7
    done = await hook.asuspend_dataset(dataset_id)
    assert done.status == "complete" and ip.dataset(dataset_id)["status"] == "suspended"
    await hook.aresume_dataset(dataset_id)
    assert ip.dataset(dataset_id)["status"] == "processing"
    assert await hook.aadd_jobs(dataset_id, 1) == 3
    ok, message = await hook.atest_connection()
    assert ok and message.startswith("Authenticated as alice")
    with pytest.raises(IceProdNotFoundError, match="404 Task not found"):
        await hook.aget_task(dataset_id, "f" * 32)


async def test_async_submit_with_a_lost_answer(hook: IceProdHook, ip: LocalIceProd) -> None:
    ip.faults.add("POST /actions/submit", drop=True, when="after", times=1)
    result = await hook.asubmit_dataset(
        CONFIG, description="async", jobs_submitted=1, marker="async-1", reconcile_grace=5
    )
    assert ip.dataset_count() == 1 and ip.counters.get("POST /actions/submit") == 1
    again = await hook.asubmit_dataset(CONFIG, description="async", jobs_submitted=1, marker="async-1")
    assert again.reattached and again.dataset_id == result.dataset_id
    assert (await hook.afind_dataset_by_marker("async-1")).dataset_id == result.dataset_id  # type: ignore[union-attr]


async def test_async_retry_after_and_give_up(hook: IceProdHook, ip: LocalIceProd, dataset_id: str) -> None:
    ip.faults.add(r"GET /datasets/\{dataset_id\}$", status=503, retry_after=0.3, times=1)
    started = time.monotonic()
    await hook.aget_dataset(dataset_id)
    assert time.monotonic() - started >= 0.3
    ip.faults.add(r"GET /datasets/\{dataset_id\}$", status=503)
    with pytest.raises(IceProdTransientError, match="gave up after 4 attempts"):
        await hook.aget_dataset(dataset_id)
    assert ip.counters.get(ROUTE) == 2 + 4


async def test_async_expired_token_is_refreshed(hook: IceProdHook, ip: LocalIceProd, dataset_id: str) -> None:
    ip.expire_access_tokens()
    await hook.aget_dataset(dataset_id)
    assert ip.counters.get(ROUTE) == 2
    assert ip.counters.snapshot()["grants"] == {"refresh_token": 1}


async def test_slow_answers_do_not_block_the_loop(
    hook: IceProdHook, ip: LocalIceProd, dataset_id: str
) -> None:
    ip.faults.add(r"GET /datasets/\{dataset_id\}$", latency=0.5, times=1)
    gaps: list[float] = []

    async def heartbeat() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    await hook.aget_dataset(dataset_id)
    beat.cancel()
    assert len(gaps) > 20
    assert max(gaps) < 0.2


async def test_action_wait_reports_progress(hook: IceProdHook, dataset_id: str) -> None:
    seen = []
    done = await hook.aretry_failed_tasks(dataset_id, on_progress=seen.append)
    assert done.status == "complete" and seen[-1].status == "complete"
    waited = await hook.await_action("task_status", done.request_id)
    assert waited.request_id == done.request_id


def test_clients_are_shared_per_process_and_per_loop(ip: LocalIceProd) -> None:
    assert shared_client(ip.api_url) is shared_client(ip.api_url + "/datasets")  # same origin

    async def clients() -> tuple[object, object]:
        first = await shared_async_client(ip.api_url)
        await asyncio.sleep(0)
        return first, await shared_async_client(ip.api_url)

    loops = [asyncio.new_event_loop() for _ in range(2)]
    try:
        (a1, a2), (b1, b2) = (loop.run_until_complete(clients()) for loop in loops)
    finally:
        for loop in loops:
            loop.close()
    assert a1 is a2 and b1 is b2  # reused within a loop
    assert a1 is not b1  # never shared across loops
