"""Poller behaviours that once survived a one-line mutation of the provider (issue 18)."""

from __future__ import annotations

import asyncio
import time

import pytest
from wait_helpers import ONE_TASK

from airflow_provider_iceprod.triggers.dataset import IceProdDatasetTrigger
from airflow_provider_iceprod.triggers.poller import active_pollers

INTERVAL = 0.2
COUNTS = "GET /datasets/{dataset_id}/task_counts/status"


@pytest.mark.parametrize("budget", [1, 2])
async def test_poller_count_budget_setting_limits_count_requests_per_interval(ip, monkeypatch, budget):
    """``[iceprod] poller_count_budget``: at most that many task-count requests per interval, and
    (with more running datasets than the budget) that many every interval."""
    monkeypatch.setenv("AIRFLOW__ICEPROD__POLLER_COUNT_BUDGET", str(budget))
    ip.grid.task_duration = 3600.0  # stay processing while we count
    ids = [ip.create_dataset(ONE_TASK, jobs_submitted=1, materialize=True) for _ in range(6)]
    triggers = [
        IceProdDatasetTrigger(
            d,
            wait_options={"poll_interval": INTERVAL},
            deadline=time.time() + 60,
            hook_params={"retry_limit": 1, "retry_delay": 0.01},
        )
        for d in ids
    ]

    async def drain(trig: IceProdDatasetTrigger) -> None:
        async for _ in trig.run():
            pass

    tasks = [asyncio.create_task(drain(t)) for t in triggers]
    try:
        while not active_pollers() or active_pollers()[0].ticks < 3:  # warm-up
            await asyncio.sleep(0.05)
        (poller,) = active_pollers()
        ip.reset_counters()
        before = poller.ticks
        while poller.ticks - before < 8:
            await asyncio.sleep(0.05)
        counted = ip.counters.get(COUNTS)
        ticks = poller.ticks - before
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    # a tick may be under way at either end of the window
    assert budget * (ticks - 1) <= counted <= budget * (ticks + 1)
