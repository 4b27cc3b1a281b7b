"""The shared poller: many triggers on one connection cost about one list request per interval."""

from __future__ import annotations

import asyncio
import math
import time

from wait_helpers import ONE_TASK, hook

from airflow_provider_iceprod.triggers.dataset import IceProdDatasetTrigger
from airflow_provider_iceprod.triggers.poller import YIELD_EVERY, active_pollers
from airflow_provider_iceprod.wait_loop import complete_counts

INTERVAL = 0.2
DATA_ROUTES = r"^GET /datasets"  # every IceProd data request a wait makes


def trigger(dataset_id: str, **options) -> IceProdDatasetTrigger:
    return IceProdDatasetTrigger(
        dataset_id,
        wait_options={"poll_interval": INTERVAL, **options},
        deadline=time.time() + 60,
        hook_params={"retry_limit": 1, "retry_delay": 0.01},
    )


async def run(trig: IceProdDatasetTrigger) -> dict:
    events = [event.payload async for event in trig.run()]
    assert len(events) == 1
    return events[0]


async def test_many_triggers_coalesce_into_one_list_request_per_interval(ip):
    ip.grid.task_duration = 3600.0  # stay processing while we count
    ids = [ip.create_dataset(ONE_TASK, jobs_submitted=2, materialize=True) for _ in range(25)]
    triggers = [trigger(d) for d in ids]
    tasks = [asyncio.create_task(run(t)) for t in triggers]
    while not active_pollers() or active_pollers()[0].ticks < 3:  # warm-up: connection, token, lists
        await asyncio.sleep(0.05)
    (poller,) = active_pollers()
    assert poller.subscribers == 25

    ip.reset_counters()
    ticks_before = poller.ticks
    await asyncio.sleep(15 * INTERVAL)
    ticks = poller.ticks - ticks_before
    lists = ip.counters.get("GET /datasets")
    counts = ip.counters.get("GET /datasets/{dataset_id}/task_counts/status")
    total = ip.counters.matching(DATA_ROUTES)
    assert ticks >= 10
    assert ticks - 1 <= lists <= ticks + 1  # one list per interval for all 25 waits
    assert counts <= 4 * (ticks + 1)  # the count budget
    assert total / ticks <= 5.5
    assert ip.counters.get("GET /datasets/{dataset_id}") == 0  # never one request per dataset
    assert poller.requests["list"] >= lists  # the poller's own accounting agrees
    assert ip.counters.matching("token") == 0  # the one access token is shared and still valid

    # every dataset got fresh counts in turn (round robin): 25 datasets / 4 per interval, so the
    # datasets' fresh-count polls differ by one at most, and together they stay within the budget
    # (generous: `ticks` is read while a round may already have delivered its refreshes, and the
    # first counts come as the waits subscribe; one poll per dataset and interval would be 25 per tick)
    polls = sorted(t.state.polls for t in triggers)
    assert polls[0] >= 1
    assert polls[-1] - polls[0] <= 1, polls
    assert sum(polls) <= 4 * poller.ticks + len(triggers), (polls, poller.ticks)

    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)
    assert active_pollers() == []  # the last subscriber left: the poller stopped


async def test_shared_token_and_finishing_waits(ip):
    ip.grid.task_duration = 0.3
    ids = [ip.create_dataset(ONE_TASK, jobs_submitted=1, materialize=True) for _ in range(12)]
    events = await asyncio.gather(*(run(trigger(d)) for d in ids))
    assert [e["status"] for e in events] == ["success"] * 12
    done = [await asyncio.to_thread(complete_counts, hook(), e) for e in events]  # execute_complete
    assert all(e["progress"]["job_counts"] == {"complete": 1} for e in done)
    assert sum(ip.counters.snapshot()["grants"].values()) == 1  # one token for every wait
    # completed datasets drop out of the main list; one extra list with status=complete finds them
    assert ip.counters.get("GET /datasets/{dataset_id}") == 0


async def test_stall_detection_within_a_bounded_number_of_intervals(ip):
    """With N datasets and budget K a stall is seen after about stall_polls * ceil(N / K) intervals."""
    ip.grid.fail_task("generate")
    two = {
        "version": 3.2,
        "tasks": [
            {"name": "generate", "trays": ONE_TASK["tasks"][0]["trays"]},
            {"name": "process", "depends": ["generate"], "trays": ONE_TASK["tasks"][0]["trays"]},
        ],
    }
    ids = [ip.create_dataset(two, jobs_submitted=1, materialize=True) for _ in range(10)]
    await asyncio.sleep(0.5)  # let every first task fail
    triggers = [trigger(d, stall_polls=2) for d in ids]
    started = time.monotonic()
    events = await asyncio.gather(*(run(t) for t in triggers))
    elapsed = time.monotonic() - started
    assert [e["outcome"] for e in events] == ["stalled"] * 10
    assert all("Failed tasks: generate (1)." in e["message"] for e in events)
    bound = 2 * math.ceil(10 / 4) + 3  # stall_polls * ceil(N / K) intervals, plus start-up
    assert elapsed < bound * INTERVAL + 2.0


async def test_one_unreadable_dataset_does_not_disturb_the_others(ip):
    ip.grid.task_duration = 0.3
    good = [ip.create_dataset(ONE_TASK, jobs_submitted=1) for _ in range(3)]
    bad = "ffffffffffffffffffffffffffffffff"
    events = await asyncio.gather(*(run(trigger(d)) for d in [*good, bad]))
    assert [e["status"] for e in events] == ["success", "success", "success", "failed"]
    assert events[-1]["outcome"] == "not_visible"


async def test_a_missing_connection_ends_every_wait_with_an_error(ip):
    trig = IceProdDatasetTrigger(
        "0123456789abcdef0123456789abcdef",
        "no_such_connection",
        wait_options={"poll_interval": INTERVAL},
        deadline=time.time() + 30,
    )
    event = await run(trig)
    assert event["status"] == "error"
    assert "no_such_connection" in event["message"]
    assert active_pollers() == []


async def test_a_burst_of_completions_costs_the_list_call_not_a_request_per_dataset(ip):
    """1,000 datasets completing together: every final event within 3 poller intervals, <= 40 requests.

    Counts, not time: intervals are the poller's own ticks, requests the stand-in's counters.
    """
    n = 1000
    ip.grid.task_duration = 3600.0  # processing until the test completes them all at once
    ids = [ip.create_dataset(ONE_TASK, jobs_submitted=1, materialize=True) for _ in range(n)]
    got: list[dict] = []

    async def wait(dataset_id: str) -> None:
        got.append(await run(trigger(dataset_id)))

    tasks = [asyncio.create_task(wait(d)) for d in ids]
    while not active_pollers() or active_pollers()[0].subscribers < n or active_pollers()[0].ticks < 2:
        await asyncio.sleep(0.05)
    (poller,) = active_pollers()

    def complete_all() -> None:  # what IceProd's crons do, for every dataset in one go
        now = time.monotonic()
        with ip.store.lock:
            for dataset_id in ids:
                for task in ip.store.tasks[dataset_id].values():
                    ip.store.set_task_status(task, "complete", now)
                for job in ip.store.jobs[dataset_id].values():
                    ip.store.set_job_status(job, "complete")
                ip.store.datasets[dataset_id]["status"] = "complete"

    most_in_one_pass = 0

    async def watch_passes() -> None:  # how many waits end between two passes of the event loop
        nonlocal most_in_one_pass
        finished = 0
        while finished < n:
            now_finished = sum(task.done() for task in tasks)
            most_in_one_pass = max(most_in_one_pass, now_finished - finished)
            finished = now_finished
            await asyncio.sleep(0)

    ip.reset_counters()
    ticks_before = poller.ticks
    await asyncio.to_thread(complete_all)
    await asyncio.gather(watch_passes(), *tasks)
    intervals = poller.ticks - ticks_before
    requests = ip.counters.matching(DATA_ROUTES)

    assert len(got) == n and {e["status"] for e in got} == {"success"}
    assert intervals <= 3, f"final events took {intervals} poller intervals"
    assert requests <= 40, f"{requests} IceProd requests for {n} completions"
    # delivered in steps: the event loop runs other work at least every YIELD_EVERY deliveries
    assert most_in_one_pass <= 2 * YIELD_EVERY, most_in_one_pass
    # not one per dataset: at most the count budget's progress refreshes of the rounds in the window
    # (a round that read task counts just after the completion asks for job counts too)
    job_counts = ip.counters.get("GET /datasets/{dataset_id}/job_counts/status")
    assert job_counts <= poller.count_budget * intervals, job_counts
    # the worker's execute_complete fills in the final counts: nothing is lost
    stale = [e for e in got if e.get("counts_final") is False]
    assert stale  # the triggerer did not fetch them
    done = await asyncio.to_thread(complete_counts, hook(), stale[0])
    assert done["progress"]["job_counts"] == {"complete": 1}
    assert done["progress"]["task_counts"] == {"complete": 1}
