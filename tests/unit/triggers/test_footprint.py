"""What an idle wait keeps alive in the triggerer: a regression bound on objects, not on time.

Every object a deferred task keeps alive is walked by each full garbage collection of the
triggerer, and a thousand new waits that keep too many make such a collection (a pause of the
whole event loop, ~100 ms with Airflow's heap) due while they start (``docs/performance.md``,
*Waiting at scale*). The count is exact, so the bound can be tight without being flaky.
"""

from __future__ import annotations

import asyncio
import gc
import time

from airflow_provider_iceprod.triggers.dataset import IceProdDatasetTrigger
from airflow_provider_iceprod.triggers.poller import active_pollers

#: Objects the collector tracks per idle wait, this test's runner included (a task, its context,
#: the trigger's async generator and its step, a coroutine, a list, weak references, as Airflow's
#: trigger runner keeps for any trigger). Measured here: 36.3 with an ``asyncio.Queue`` and an
#: ``asyncio.timeout`` per wait, 24.2 with the mailbox and the poller's one deadline timer, 21.2
#: with the wait state's samples and ETA as tuples of floats (untracked) and no ``get()`` coroutine
#: between the trigger and the mailbox.
MAX_TRACKED_PER_WAIT = 23


async def _run(trigger: IceProdDatasetTrigger) -> list[dict]:
    return [event.payload async for event in trigger.run()]


async def _start(ids: list[str], tasks: list[asyncio.Task]) -> None:
    for dataset_id in ids:
        trigger = IceProdDatasetTrigger(
            dataset_id, wait_options={"poll_interval": 0.2}, deadline=time.time() + 600
        )
        tasks.append(asyncio.create_task(_run(trigger)))
        await asyncio.sleep(0)
    while not active_pollers() or active_pollers()[0].subscribers < len(tasks):
        await asyncio.sleep(0.01)
    ticks = active_pollers()[0].ticks
    while active_pollers()[0].ticks < ticks + 2:  # every row listed and settled
        await asyncio.sleep(0.01)


def _tracked() -> int:
    gc.collect()
    return len(gc.get_objects())


async def test_an_idle_wait_keeps_few_objects_for_the_garbage_collector(ip, slow):
    ids = [slow(jobs=1) for _ in range(300)]
    tasks: list[asyncio.Task] = []
    try:
        await _start(ids[:100], tasks)  # the first waits pay the one-off costs (hook, client, token)
        before = _tracked()
        await _start(ids[100:], tasks)
        per_wait = (_tracked() - before) / 200
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert 12 < per_wait <= MAX_TRACKED_PER_WAIT, per_wait
