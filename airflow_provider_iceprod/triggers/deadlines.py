"""One event-loop timer for the deadlines of every wait of a poller, instead of a timer per wait.

A thousand deferred tasks with a ``timeout`` would otherwise hold a thousand ``asyncio`` timers
(each a handle, a context and bound methods, all kept alive and walked by every full garbage
collection). :class:`DeadlineTimer` keeps the deadlines in a heap and arms one loop timer for the
earliest; when it fires, every subscription whose deadline has passed is expired
(:meth:`~airflow_provider_iceprod.triggers.tracking.Subscription.expire`).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

from airflow_provider_iceprod.triggers.tracking import Subscription


class DeadlineTimer:
    """Expire subscriptions at their deadlines (event-loop time), with one timer for all of them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._heap: list[tuple[float, int, Subscription]] = []
        self._order = itertools.count()  # ties: first added, first expired; never compares subs
        self._timer: asyncio.TimerHandle | None = None
        self._stale = 0  # heap entries of subscriptions closed before their deadline

    def __len__(self) -> int:
        """Deadlines still pending (closed subscriptions not counted)."""
        return len(self._heap) - self._stale

    def add(self, sub: Subscription) -> None:
        """Expire ``sub`` at its ``deadline`` (loop time; on the next pass if that has passed)."""
        when = sub.deadline
        if when is None:
            return
        heapq.heappush(self._heap, (when, next(self._order), sub))
        if self._timer is None or when < self._timer.when():
            self._arm()

    def discard(self, sub: Subscription) -> None:
        """``sub`` was closed: its entry, if still pending, is dropped lazily (compacted in bulk)."""
        if sub.deadline is None or sub.expired:  # never added, or already popped by the timer
            return
        self._stale += 1
        if self._stale > 64 and self._stale * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if not entry[2].closed]
            heapq.heapify(self._heap)
            self._stale = 0
            self._arm()

    def cancel(self) -> None:
        """Stop the timer (the poller stopped); pending deadlines are forgotten."""
        self._heap.clear()
        self._stale = 0
        self._arm()  # nothing left: only disarms

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._heap:
            self._timer = self._loop.call_at(self._heap[0][0], self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._loop.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, sub = heapq.heappop(heap)
            if sub.closed:
                self._stale -= 1
            else:
                sub.expire()
        self._arm()
