"""Admit a burst of new waits a batch per event-loop pass, so starting them never blocks the loop.

A triggerer that picks up a thousand deferred tasks at once starts a thousand trigger coroutines;
without a gate, their first steps (subscribing to the shared poller) all run in one pass of the
event loop, and nothing else (heartbeats, other triggers) runs until they are done. :func:`admit`
lets :data:`BATCH` callers through per pass and parks the rest on futures released by the next
passes, so the loop yields between batches.

While the process loads its async path (:mod:`~airflow_provider_iceprod.async_warmup`, a worker
thread, about 100 ms), the gate admits no one: otherwise the waits admitted meanwhile would all
wait for the warm-up and all resume in the one pass after it (10,000 waits: ~30 ms in one step).
"""

from __future__ import annotations

import asyncio
from collections import deque
from weakref import WeakKeyDictionary

from airflow_provider_iceprod.async_warmup import warming

#: Waits admitted per pass of the event loop.
BATCH = 50


class Admission:
    """The gate of one event loop (see :func:`admit`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, batch: int = BATCH) -> None:
        self._loop = loop
        self.batch = batch
        self._admitted = 0  # callers let through in the current pass
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._scheduled = False
        self._hold: asyncio.Future[None] | None = None  # admit no one until it is done
        #: Passes that admitted at least one caller (for tests and diagnostics).
        self.passes = 0

    def hold_until(self, done: asyncio.Future[None]) -> None:
        """Admit no one until ``done`` is done (then a batch per pass again)."""
        if self._hold is not done:
            self._hold = done
            done.add_done_callback(lambda _: self._schedule())

    def _held(self) -> bool:
        return self._hold is not None and not self._hold.done()

    async def admit(self) -> None:
        if self._admitted < self.batch and not self._waiting and not self._held():
            self._admitted += 1
            self._schedule()
            return
        future: asyncio.Future[None] = self._loop.create_future()
        self._waiting.append(future)
        self._schedule()
        await future

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._next_pass)

    def _next_pass(self) -> None:
        """A new pass of the loop: the next batch of parked callers may go."""
        self._scheduled = False
        if self._held():  # the hold's done callback schedules the next pass
            return
        if self._admitted:
            self.passes += 1
        self._admitted = 0
        while self._waiting and self._admitted < self.batch:
            future = self._waiting.popleft()
            if not future.done():  # a caller cancelled while parked takes no slot
                future.set_result(None)
                self._admitted += 1
        if self._admitted or self._waiting:
            self._schedule()


_gates: WeakKeyDictionary[asyncio.AbstractEventLoop, Admission] = WeakKeyDictionary()


def gate() -> Admission:
    """The gate of the running event loop."""
    loop = asyncio.get_running_loop()
    found = _gates.get(loop)
    if found is None:
        found = _gates[loop] = Admission(loop)
    return found


async def admit() -> None:
    """Wait for this pass's batch to have room (returns at once unless a burst is starting). Returns
    only once the process's async path is loaded (:func:`~airflow_provider_iceprod.async_warmup.warming`):
    a caller needs no ``warm_async_path()`` of its own."""
    found = gate()
    warm_up = warming()
    if warm_up is not None:
        found.hold_until(warm_up)
    await found.admit()
