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


async def test_no_one_is_admitted_while_the_async_path_loads_then_a_batch_per_pass():
    """Waits admitted during the warm-up would all resume in the one pass after it."""
    loop = asyncio.get_running_loop()
    gate = admission.Admission(loop)
    warm_up: asyncio.Future[None] = loop.create_future()
    gate.hold_until(warm_up)
    admitted: list[int] = []
    passes = 0

    def count_passes() -> None:
        nonlocal passes
        passes += 1
        if len(admitted) < 500:
            loop.call_soon(count_passes)

    async def wait(n: int) -> None:
        await gate.admit()
        admitted.append(passes)

    waits = [asyncio.create_task(wait(n)) for n in range(500)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert admitted == []  # held: not even the first batch
    loop.call_soon(count_passes)
    warm_up.set_result(None)
    await asyncio.gather(*waits)
    per_pass = [admitted.count(p) for p in sorted(set(admitted))]
    assert max(per_pass) <= admission.BATCH and len(per_pass) >= 500 // admission.BATCH
    await asyncio.wait_for(gate.admit(), 1.0)  # the hold is over: a quiet loop admits at once


async def test_the_module_gate_holds_for_the_real_warm_up(monkeypatch):
    from airflow_provider_iceprod import async_warmup

    loop = asyncio.get_running_loop()
    pending: asyncio.Future[None] = loop.create_future()
    monkeypatch.setattr(async_warmup, "_done", False)
    monkeypatch.setitem(async_warmup._pending, loop, pending)
    waiting = asyncio.create_task(admission.admit())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    pending.set_result(None)
    await asyncio.wait_for(waiting, 1.0)
