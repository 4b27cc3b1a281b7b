"""What the shared poller knows and hands out: list rows, subscriptions, updates (no I/O).

:class:`Subscription` is one wait registered with the poller; it reads :class:`Update` objects.
:class:`Tracked` is the poller's view of one dataset, shared by every subscription to it;
``DatasetProgress.from_row`` (:mod:`~airflow_provider_iceprod.models`) turns it into the progress
the wait decides on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_iceprod.models import DatasetProgress

#: What a wait needs of a listed dataset (IceProd always adds the id field). The list is the one
#: answer that grows with the number of waits (10,000 waits: ~3 MB and ~17 ms of JSON decoding with
#: :data:`LIST_KEYS`), so without feeds the poller asks for these fields only.
WAIT_KEYS = (
    "dataset_id",
    "dataset",
    "status",
    "truncated",
    "jobs_submitted",
    "tasks_submitted",
    "username",
)
#: Projection of the shared list request when feeds (asset watchers) listen: they filter on more.
LIST_KEYS = (*WAIT_KEYS, "group", "description", "start_date")


@dataclass
class Update:
    """What a subscriber gets each interval: a progress view, or the error that prevented one.

    ``tasks_fresh``/``jobs_fresh``: whether the task/job counts in ``progress`` were fetched this
    interval (otherwise they are the last known ones, or empty). ``final``: the listed status ends
    a wait (the poller fetched no final counts; the worker's ``execute_complete`` does).
    """

    progress: DatasetProgress | None = None
    tasks_fresh: bool = False
    jobs_fresh: bool = False
    error: BaseException | None = None
    final: bool = False


class Subscription:
    """One wait registered with the poller: a mailbox of :class:`Update` objects.

    Read with :meth:`next_update`, awaiting :meth:`news` while it has none (or ``await get()``).

    Kept small on purpose: a triggerer holds one per deferred task, and every object it keeps
    alive is walked by each full garbage collection. While idle it holds no container and at
    most one future (the one :meth:`news` handed out); its deadline lives in the poller's one
    :class:`~airflow_provider_iceprod.triggers.deadlines.DeadlineTimer`, not in a timer of its own.
    """

    __slots__ = ("_loop", "_updates", "_waiter", "closed", "dataset_id", "deadline", "expired", "options")

    def __init__(
        self,
        dataset_id: str,
        options: Any,
        loop: asyncio.AbstractEventLoop,
        deadline: float | None = None,
    ) -> None:
        self.dataset_id = dataset_id
        self.options = options  # WaitOptions
        self.deadline = deadline  # event-loop time (loop.time()) at which it expires; None: never
        self.expired = False  # its deadline passed: get() raises TimeoutError
        self.closed = False  # unsubscribed: nothing is delivered any more
        self._loop = loop
        self._updates: deque[Update] | None = None  # created with the first pending update
        self._waiter: asyncio.Future[None] | None = None

    def put(self, update: Update) -> None:
        """Deliver an update (never blocks; the reader gets updates in order)."""
        if self.closed:
            return
        if self._updates is None:
            self._updates = deque()
        self._updates.append(update)
        self._wake()

    def expire(self) -> None:
        """The deadline passed: :meth:`next_update` (and so :meth:`get`) raises ``TimeoutError``."""
        if not self.closed:
            self.expired = True
            self._wake()

    def close(self) -> None:
        """Unsubscribed: drop what is pending and deliver nothing more."""
        self.closed = True
        self._updates = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def next_update(self) -> Update | None:
        """The next pending update, or None; ``TimeoutError`` once the deadline has passed (before
        any pending update)."""
        waiter = self._waiter
        if waiter is not None and waiter.done():
            self._waiter = None  # woken: an idle wait keeps only the future it awaits
        if self.expired:
            raise TimeoutError
        updates = self._updates
        if not updates:
            return None
        update = updates.popleft()
        if not updates:
            self._updates = None  # an idle wait keeps no container
        return update

    def news(self) -> asyncio.Future[None]:
        """A future that is done when an update arrives or the deadline passes.

        A plain method, not a coroutine: an idle reader awaits only this future, so each wait keeps
        one object fewer for the garbage collector than an ``async def get()`` frame would.
        """
        waiter = self._waiter
        if waiter is None or waiter.done():
            waiter = self._waiter = self._loop.create_future()
            if self.expired or self._updates:
                waiter.set_result(None)
        return waiter

    async def get(self) -> Update:
        """The next update, waiting for it; ``TimeoutError`` once the deadline has passed."""
        while (update := self.next_update()) is None:
            try:
                await self.news()
            finally:
                self._waiter = None  # also when the reader is cancelled
        return update


@dataclass
class Tracked:
    """What the poller knows about one dataset (shared by every subscription to it)."""

    row: dict[str, Any] | None = None
    job_counts: dict[str, int] = field(default_factory=dict)
    task_counts: dict[str, int] = field(default_factory=dict)
    counts_at: float = 0.0  # monotonic time of the last task-count refresh (0 = never)
    finished_status: str | None = None  # the wait-ending status already delivered
    # derived from the subscriptions (kept up to date by the poller, so a tick does no per-sub work)
    ending: frozenset[str] = frozenset()  # statuses that end at least one subscriber's wait
    interval: float = 60.0  # the shortest poll interval of its subscribers


def tasks_all_complete(tracked: Tracked) -> bool:
    """Every task complete (the moment to ask for job counts: the cron-independent success check)."""
    counts = {k: v for k, v in tracked.task_counts.items() if v}
    if set(counts) != {"complete"} or tracked.row is None:
        return False
    if tracked.row.get("truncated"):
        return True
    return counts["complete"] >= int(tracked.row.get("tasks_submitted") or 0)
