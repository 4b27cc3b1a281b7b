"""The admission gate: a burst of new waits is let through a batch per event-loop pass."""

from __future__ import annotations

import asyncio

from airflow_provider_iceprod.triggers import admission


async def test_a_burst_is_admitted_a_batch_per_event_loop_pass():
    loop = asyncio.get_running_loop()
    admitted = 0
    per_pass: list[int] = []
    last = 0

    def probe() -> None:  # runs once per pass of the loop
        nonlocal last
        per_pass.append(admitted - last)
        last = admitted
        if admitted < 1000:
            loop.call_soon(probe)

    async def wait() -> None:
        nonlocal admitted
        await admission.admit()
        admitted += 1

    loop.call_soon(probe)
    await asyncio.gather(*(wait() for _ in range(1000)))
    assert admitted == 1000
    assert max(per_pass) <= admission.BATCH  # never more than one batch in one pass
    assert sum(1 for n in per_pass if n) >= 1000 // admission.BATCH  # the loop ran between batches


async def test_a_cancelled_waiter_takes_no_slot_and_a_quiet_loop_admits_at_once():
    gate = admission.gate()
    blockers = [asyncio.create_task(gate.admit()) for _ in range(admission.BATCH * 2)]
    await asyncio.sleep(0)
    blockers[-1].cancel()
    results = await asyncio.gather(*blockers, return_exceptions=True)
    assert sum(isinstance(r, asyncio.CancelledError) for r in results) == 1
    for _ in range(3):
        await asyncio.sleep(0)
    await asyncio.wait_for(gate.admit(), 1.0)  # nothing queued: immediate
