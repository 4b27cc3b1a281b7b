"""Hook behaviours that once survived a one-line mutation of the provider (issue 18).

Each test names the documented behaviour it guards; all go through public hook methods only, so
they hold whatever the hook's internals look like.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from hook_helpers import CONFIG, FAST

from airflow_provider_iceprod.exceptions import IceProdActionTimeoutError
from airflow_provider_iceprod.hooks.iceprod import IceProdHook
from airflow_provider_iceprod.testing.server import LocalIceProd

GET_DATASET = "GET /datasets/{dataset_id}"


def test_marker_lookup_returns_the_oldest_of_several_datasets(hook: IceProdHook, ip: LocalIceProd) -> None:
    """docs/hook.md: with several datasets carrying one marker, ``find_dataset_by_marker`` returns the
    oldest (the lowest dataset number) and logs a warning."""
    ids = [
        ip.create_dataset(CONFIG, description=f"try {n} [airflow:dup.run.task.0]", jobs_submitted=1)
        for n in range(3)
    ]
    ip.create_dataset(CONFIG, description="no marker here", jobs_submitted=1)
    numbers = {ip.dataset(i)["dataset"]: i for i in ids}
    found = hook.find_dataset_by_marker("dup.run.task.0")
    assert found is not None
    assert found.dataset_id == numbers[min(numbers)] == ids[0]
    assert found.dataset == min(numbers)


@pytest.fixture
def slow_actions(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalIceProd]:
    """A stand-in whose ``/actions/*`` requests stay queued for a minute."""
    with LocalIceProd(auto_approve_as="alice", action_delay=60, materialize_interval=None) as server:
        monkeypatch.setenv("AIRFLOW_CONN_ICEPROD_DEFAULT", server.airflow_connection_json(username="alice"))
        yield server


@pytest.mark.timeout(60)
def test_an_action_that_does_not_finish_in_time_raises_the_action_timeout(slow_actions: LocalIceProd) -> None:
    """``IceProdActionTimeoutError`` after ``timeout`` seconds, naming the request id (it may still run)."""
    ip = slow_actions
    dataset_id = ip.create_dataset(CONFIG, jobs_submitted=1)
    hook = IceProdHook(**FAST)
    with pytest.raises(IceProdActionTimeoutError, match="still") as info:
        hook.materialize(dataset_id, timeout=0.3)
    request_id = info.value.request_id
    assert request_id and request_id in str(info.value)
    # the request is real and still pending in IceProd: the timeout did not invent it
    assert hook.get_action("materialization", request_id).status in ("queued", "processing")
    # a poll every 0.05 s for 0.3 s: a handful of polls, not a loop that ignored the deadline
    assert 1 <= ip.counters.get("GET /actions/materialization/{request_id}") <= 20


async def test_async_tokens_are_registered_with_the_secret_masker(ip: LocalIceProd) -> None:
    """Triggers fetch tokens on the event loop; those go to the masker through ``amask_secret``
    (no sync token fetch here: a fresh stand-in, so the process-wide cache has nothing for it)."""
    from airflow.sdk._shared.secrets_masker import redact

    async_hook = IceProdHook(**FAST)
    before = set(ip.issued_tokens())
    await async_hook.awhoami()
    minted = [t for t in ip.issued_tokens() if t not in before]
    assert minted, "the async call fetched no token"
    for token in minted:
        assert redact(f"token {token}") == "token ***"


async def test_at_most_four_async_requests_in_flight_per_loop(hook: IceProdHook, ip: LocalIceProd) -> None:
    """The async client lets 4 requests per event loop and origin reach IceProd at once, no more,
    no fewer; the others queue on the client side."""
    dataset_id = ip.create_dataset(CONFIG, jobs_submitted=1)
    async_hook = IceProdHook(retry_limit=0, timeout=30.0)  # a slow answer is no error here
    await async_hook.aget_dataset(dataset_id)  # token and settings first, outside the count
    ip.reset_counters()
    ip.faults.add(r"^GET /datasets/\{dataset_id\}$", latency=2.0)  # every answer is slow

    async def arrived(n: int) -> None:
        while ip.counters.get(GET_DATASET) < n:
            await asyncio.sleep(0.02)

    calls = [asyncio.ensure_future(async_hook.aget_dataset(dataset_id)) for _ in range(20)]
    await asyncio.wait_for(arrived(4), timeout=1.9)  # the first four arrive before any answer
    await asyncio.sleep(0.8)  # still inside the 2 s latency: nobody else got through
    assert ip.counters.get(GET_DATASET) == 4
    results = await asyncio.wait_for(asyncio.gather(*calls), timeout=60)
    assert {r.dataset_id for r in results} == {dataset_id}
    assert ip.counters.get(GET_DATASET) == 20
