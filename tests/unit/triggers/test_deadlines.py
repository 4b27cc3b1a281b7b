"""The waits' mailbox (``Subscription``) and the poller's one timer for every deadline."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_iceprod.triggers.deadlines import DeadlineTimer
from airflow_provider_iceprod.triggers.tracking import Subscription, Update


def sub(loop: asyncio.AbstractEventLoop, deadline: float | None = None) -> Subscription:
    return Subscription("d1", None, loop, deadline)


async def parked_reader() -> tuple[Subscription, asyncio.Task[Update]]:
    """A mailbox and a reader already waiting on it."""
    box = sub(asyncio.get_running_loop())
    reader = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    assert not reader.done() and box._waiter is not None
    return box, reader


async def test_updates_arrive_in_order_and_an_idle_mailbox_keeps_no_container():
    loop = asyncio.get_running_loop()
    box = sub(loop)
    first, second = Update(tasks_fresh=True), Update(jobs_fresh=True)
    box.put(first)
    box.put(second)
    assert await box.get() is first
    assert await box.get() is second
    assert box._updates is None  # drained: nothing kept between updates
    reader = asyncio.create_task(box.get())
    await asyncio.sleep(0)
    assert not reader.done() and box._waiter is not None
    third = Update(final=True)
    box.put(third)
    assert await reader is third
    assert box._waiter is None


async def test_expiry_wakes_the_reader_and_beats_pending_updates():
    box, reader = await parked_reader()
    box.expire()
    with pytest.raises(TimeoutError):
        await reader
    box.put(Update())
    with pytest.raises(TimeoutError):  # a deadline that has passed ends the wait before any update
        await box.get()


async def test_a_closed_mailbox_drops_updates_and_ignores_expiry():
    loop = asyncio.get_running_loop()
    box = sub(loop)
    box.put(Update())
    box.close()
    box.put(Update())
    box.expire()
    assert box._updates is None and not box.expired


async def test_a_cancelled_reader_leaves_no_waiter_and_the_next_get_still_works():
    box, reader = await parked_reader()
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    assert box._waiter is None
    update = Update()
    box.put(update)
    assert await box.get() is update


async def test_each_deadline_expires_its_own_subscription_in_time_order():
    loop = asyncio.get_running_loop()
    timer = DeadlineTimer(loop)
    now = loop.time()
    late, early, never = sub(loop, now + 0.2), sub(loop, now + 0.05), sub(loop, None)
    for box in (late, early, never):
        timer.add(box)
    assert len(timer) == 2  # no deadline, no entry
    await asyncio.sleep(0.1)
    assert early.expired and not late.expired
    await asyncio.sleep(0.15)
    assert late.expired and not never.expired
    assert len(timer) == 0 and timer._timer is None  # nothing left: no timer armed


async def test_a_deadline_in_the_past_expires_on_the_next_pass():
    loop = asyncio.get_running_loop()
    timer = DeadlineTimer(loop)
    box = sub(loop, loop.time() - 5)
    timer.add(box)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(box.get(), 1)


async def test_one_loop_timer_serves_every_deadline_and_closed_ones_are_compacted():
    loop = asyncio.get_running_loop()
    timer = DeadlineTimer(loop)
    now = loop.time()
    boxes = [sub(loop, now + 60 + i) for i in range(200)]
    for box in boxes:
        timer.add(box)
    armed = timer._timer
    assert armed is not None and armed.when() == pytest.approx(now + 60)
    for box in boxes[:150]:  # the waits ended before their deadlines
        box.close()
        timer.discard(box)
    assert len(timer) == 50
    assert len(timer._heap) <= 100  # compacted once half were stale, not kept until their deadlines
    assert timer._timer is not None and timer._timer.when() == pytest.approx(timer._heap[0][0])
    assert timer._heap[0][0] > now + 60  # the closed first deadline no longer arms the timer
    timer.cancel()
    assert timer._timer is None and len(timer) == 0


async def test_an_earlier_deadline_rearms_the_timer():
    loop = asyncio.get_running_loop()
    timer = DeadlineTimer(loop)
    far, near = sub(loop, loop.time() + 60), sub(loop, loop.time() + 0.05)
    timer.add(far)
    timer.add(near)
    await asyncio.sleep(0.1)
    assert near.expired and not far.expired
    timer.discard(near)  # already expired: nothing stale to count
    assert timer._stale == 0 and len(timer) == 1
    timer.cancel()
