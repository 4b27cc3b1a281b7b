"""IceProdDatasetEventTrigger against the stand-in: one event per dataset entering a watched status.

The triggerer gives a watcher its asset's state store (``asset_state_store``); here a dict-backed
object with the same ``aget``/``aset`` methods stands in for it. The real store, in a real
triggerer, is exercised by ``tests/integration/test_dataset_events_e2e.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airflow_provider_iceprod.assets import iceprod_dataset_asset
from airflow_provider_iceprod.triggers import feeds as feeds_module
from airflow_provider_iceprod.triggers.events import IceProdDatasetEventTrigger
from airflow_provider_iceprod.triggers.poller import active_pollers

INTERVAL = 0.1
ONE_TASK = {
    "version": 3.2,
    "tasks": [{"name": "generate", "trays": [{"modules": [{"src": "/usr/bin/true"}]}]}],
}


class MemoryAssetStore:
    """The single-asset ``asset_state_store`` accessor's async interface, kept in a dict."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.writes = 0

    async def aget(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.writes += 1


class Watcher:
    """Runs one trigger like the triggerer does and collects its event payloads."""

    def __init__(self, store: MemoryAssetStore | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("poll_interval", INTERVAL)
        self.trigger = IceProdDatasetEventTrigger(**kwargs)
        self.store = store if store is not None else MemoryAssetStore()
        self.trigger.asset_state_store = self.store  # type: ignore[assignment]
        self.events: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None

    async def _consume(self) -> None:
        async for event in self.trigger.run():
            self.events.append(event.payload)

    async def start(self) -> Watcher:
        """Start and wait until the first start's baseline is stored."""
        self.task = asyncio.create_task(self._consume())
        await until(lambda: self.trigger.state_key in self.store.data)
        return self

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def settle(intervals: int = 5) -> None:
    """Give the watchers a few more polls (to see that nothing else arrives)."""
    await asyncio.sleep(intervals * INTERVAL)


async def finished(ip: Any, *ids: str, status: str = "complete") -> None:
    await until(lambda: all(ip.dataset(d)["status"] == status for d in ids))


@pytest.fixture
def ip(iceprod_connection: Any) -> Any:
    iceprod_connection.grid.task_duration = 0.5  # datasets are seen processing before they finish
    return iceprod_connection


def make(ip: Any, description: str = "IceCube-2026 muons", group: str = "simprod", **kw: Any) -> str:
    return ip.create_dataset(ONE_TASK, description=description, group=group, materialize=True, **kw)


async def test_one_event_per_matching_dataset_history_and_others_ignored(ip) -> None:
    old = make(ip, "IceCube-2026 old")
    await finished(ip, old)
    watcher = await Watcher(group="simprod", description="IceCube-2026*").start()

    new = make(ip)
    other_group = make(ip, group="users")
    other_text = make(ip, "IceCube-2025 muons")
    await finished(ip, new, other_group, other_text)
    await until(lambda: len(watcher.events) >= 1)
    await settle()
    await watcher.stop()

    [event] = watcher.events
    row = ip.dataset(new)
    assert event == {
        "dataset_id": new,
        "dataset": row["dataset"],
        "description": "IceCube-2026 muons",
        "status": "complete",
        "group": "simprod",
        "owner": "alice",
        "jobs_submitted": 1,
        "tasks_submitted": 1,
        "job_counts": {"complete": 1},
        "task_counts": {"complete": 1},
    }
    assert active_pollers() == []  # the watcher left; the poller stopped


async def test_errors_and_suspended_are_reported_complete_is_not(ip) -> None:
    from airflow_provider_iceprod.hooks.iceprod import IceProdHook

    watcher = await Watcher(status=["errors", "suspended"], owner="alice").start()
    ip.grid.task_duration = 60.0
    paused = make(ip, "to suspend")
    await asyncio.to_thread(
        IceProdHook("iceprod_default", retry_limit=1, retry_delay=0.01).suspend_dataset, paused
    )
    ip.grid.fail_task("generate")
    ip.grid.task_duration = 0.3
    failing = make(ip, "to fail")
    await finished(ip, paused, status="suspended")
    await finished(ip, failing, status="errors")
    await until(lambda: len(watcher.events) >= 2)
    await settle()
    await watcher.stop()
    assert sorted((e["dataset_id"], e["status"]) for e in watcher.events) == sorted(
        [(paused, "suspended"), (failing, "errors")]
    )


async def test_restart_neither_repeats_nor_loses_events(ip) -> None:
    store = MemoryAssetStore()
    first = await Watcher(store, group="simprod").start()
    a = make(ip, "a")
    await finished(ip, a)
    await until(lambda: len(first.events) == 1)
    ip.grid.task_duration = 2.0
    running = make(ip, "running when the triggerer stops")
    await until(lambda: ip.dataset(running)["status"] == "processing" and first.trigger is not None)
    await settle(3)  # the watcher has seen it running
    await first.stop()

    # while the "triggerer" is down: the running one completes, a new one is born and completes
    ip.grid.task_duration = 0.1
    born = make(ip, "born while down")
    await finished(ip, running, born)

    second = await Watcher(store, group="simprod").start()
    await until(lambda: len(second.events) >= 2)
    await settle()
    await second.stop()
    assert [e["dataset_id"] for e in first.events] == [a]
    assert sorted(e["dataset_id"] for e in second.events) == sorted([running, born])


async def test_first_start_replays_since_a_date_when_asked(ip) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    done = make(ip, "IceCube-2026 finished before the watcher")
    await finished(ip, done)

    plain = await Watcher(description="IceCube-2026*").start()
    replay = await Watcher(description="IceCube-2026*", replay_since=before.isoformat()).start()
    later = await Watcher(description="IceCube-2026*", replay_since=datetime.now(UTC)).start()
    await until(lambda: len(replay.events) == 1)
    await settle()
    for w in (plain, replay, later):
        await w.stop()
    assert plain.events == [] and later.events == []
    assert [e["dataset_id"] for e in replay.events] == [done]


async def test_dataset_numbers_filter(ip) -> None:
    first, second = make(ip, "x"), make(ip, "y")
    number = ip.dataset(second)["dataset"]
    watcher = await Watcher(datasets=[number]).start()
    await finished(ip, first, second)
    await until(lambda: len(watcher.events) == 1)
    await settle()
    await watcher.stop()
    assert [e["dataset"] for e in watcher.events] == [number]


async def test_many_watchers_one_list_per_interval_and_counts_once(ip) -> None:
    watchers = [
        await Watcher(owner="alice" if i % 2 else None, group="simprod" if i % 3 else None).start()
        for i in range(20)
    ]
    (poller,) = active_pollers()
    assert poller.feeds == 20
    ip.reset_counters()
    ticks = poller.ticks
    done = make(ip)
    await finished(ip, done)
    await until(lambda: all(len(w.events) == 1 for w in watchers))
    await settle(10)
    ticks = poller.ticks - ticks
    lists = ip.counters.get("GET /datasets")
    for w in watchers:
        await w.stop()
    # one active list per interval, plus one complete list after the dataset left it
    assert ticks >= 10
    assert lists <= ticks + 3
    # the final counts of the dataset are fetched once, not once per watcher
    assert ip.counters.get("GET /datasets/{dataset_id}/job_counts/status") == 1
    assert ip.counters.get("GET /datasets/{dataset_id}/task_counts/status") == 1
    assert all(w.events[0]["dataset_id"] == done for w in watchers)


async def test_a_dataset_born_and_finished_between_two_polls_is_found(ip, monkeypatch) -> None:
    monkeypatch.setattr(feeds_module, "RECONCILE_EVERY", 3)
    ip.grid.task_duration = 0.02
    watcher = await Watcher(poll_interval=0.5, group="simprod").start()
    quick = make(ip, "quick")
    await finished(ip, quick)
    await until(lambda: len(watcher.events) == 1, timeout=10)
    await watcher.stop()
    assert watcher.events[0]["dataset_id"] == quick


async def test_listing_errors_do_not_end_the_watch(ip) -> None:
    watcher = await Watcher(group="simprod").start()
    ip.faults.add(r"GET /datasets$", status=400, error="injected", times=3)
    done = make(ip)
    await finished(ip, done)
    await until(lambda: len(watcher.events) == 1)
    await watcher.stop()
    assert watcher.events[0]["dataset_id"] == done


def test_arguments_are_checked_and_serialize_round_trips() -> None:
    for bad in (
        {"status": "processing"},
        {"status": []},
        {"group": ""},
        {"datasets": [0]},
        {"datasets": ["x"]},
        {"description": " "},
        {"poll_interval": 0},
        {"replay_since": "yesterday"},
    ):
        with pytest.raises(ValueError):
            IceProdDatasetEventTrigger(**bad)
    trigger = IceProdDatasetEventTrigger(
        "ice", status=["suspended", "errors"], group="simprod", datasets=[5, 3], replay_since="2026-01-01"
    )
    classpath, kwargs = trigger.serialize()
    assert classpath.endswith("events.IceProdDatasetEventTrigger")
    again = IceProdDatasetEventTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert kwargs["status"] == ["errors", "suspended"] and kwargs["datasets"] == [3, 5]
    # the stored state is named after the connection and filter, not the poll interval
    assert IceProdDatasetEventTrigger(**{**kwargs, "poll_interval": 5}).state_key == trigger.state_key
    assert IceProdDatasetEventTrigger(**{**kwargs, "group": "users"}).state_key != trigger.state_key


def test_helper_returns_an_asset_with_its_watcher() -> None:
    asset = iceprod_dataset_asset(
        "iceprod_default", group="simprod", status="complete", description="IceCube-2026*"
    )
    assert asset.uri.startswith("iceprod://iceprod_default/watch?")
    [watcher] = asset.watchers
    assert isinstance(watcher.trigger, IceProdDatasetEventTrigger)
    assert watcher.trigger.filter.groups == ("simprod",)
    assert asset == iceprod_dataset_asset("iceprod_default", group="simprod", description="IceCube-2026*")


async def test_watchers_and_deferred_waits_share_one_list_per_interval(ip) -> None:
    from airflow_provider_iceprod.triggers.dataset import IceProdDatasetTrigger

    ip.grid.task_duration = 3600.0
    waited = make(ip, "waited on by a deferred task")
    wait = IceProdDatasetTrigger(waited, wait_options={"poll_interval": INTERVAL}, deadline=time.time() + 60)
    wait_task = asyncio.create_task(anext(aiter(wait.run())))
    watchers = [await Watcher(group="simprod").start() for _ in range(5)]
    (poller,) = active_pollers()
    assert (poller.subscribers, poller.feeds) == (1, 5)
    ip.reset_counters()
    ticks = poller.ticks
    await settle(10)
    ticks = poller.ticks - ticks
    lists = ip.counters.get("GET /datasets")
    wait_task.cancel()
    for w in watchers:
        await w.stop()
    await asyncio.gather(wait_task, return_exceptions=True)
    assert ticks >= 5
    assert lists <= ticks + 1  # the wait and the five watchers: one list per interval together
    assert active_pollers() == []


def test_trigger_identity_is_stable_across_dag_parses() -> None:
    """Airflow keys asset triggers by a hash of their kwargs: no per-parse value may sneak in."""
    from airflow.triggers.base import BaseEventTrigger

    def parse() -> int:
        trigger = (
            iceprod_dataset_asset("iceprod_default", group="simprod", description="IceCube-2026*")
            .watchers[0]
            .trigger
        )
        return BaseEventTrigger.hash(*trigger.serialize())

    assert parse() == parse()


async def test_a_suspended_dataset_event_carries_its_final_counts(ip) -> None:
    """The event of a dataset that entered ``suspended`` holds its job and task counts as IceProd
    has them then (fetched once by the poller), not ``None`` and not the counts of a running dataset."""
    from collections import Counter

    from airflow_provider_iceprod.hooks.iceprod import IceProdHook

    watcher = await Watcher(status=["suspended", "complete"], owner="alice").start()
    ip.grid.task_duration = 60.0
    paused = ip.create_dataset(ONE_TASK, jobs_submitted=3, materialize=True, description="to suspend")
    hook = IceProdHook("iceprod_default", retry_limit=1, retry_delay=0.01)
    await asyncio.to_thread(hook.suspend_dataset, paused)
    await finished(ip, paused, status="suspended")
    await until(lambda: len(watcher.events) >= 1)
    (event,) = watcher.events
    assert event["status"] == "suspended"
    assert event["task_counts"] == ip.task_counts(paused) == {"suspended": 3}
    assert event["job_counts"] == dict(Counter(j["status"] for j in ip.jobs(paused))) == {"suspended": 3}

    # resumed and complete: the counts of that status, not the ones fetched for "suspended"
    ip.grid.task_duration = 0.05
    await asyncio.to_thread(hook.resume_dataset, paused)
    await finished(ip, paused, status="complete")
    await until(lambda: len(watcher.events) >= 2)
    await watcher.stop()
    done = watcher.events[1]
    assert done["status"] == "complete"
    assert (done["job_counts"], done["task_counts"]) == ({"complete": 3}, {"complete": 3})
