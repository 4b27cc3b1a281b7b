"""What the shared poller knows and hands out: list rows, subscriptions, updates (no I/O).

:class:`Subscription` is one wait registered with the poller; it reads :class:`Update` objects.
:class:`Tracked` is the poller's view of one dataset, shared by every subscription to it;
``DatasetProgress.from_row`` (:mod:`~airflow_provider_iceprod.models`) turns it into the progress
the wait decides on.
"""

from __future__ import annotations

import asyncio
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


@dataclass(eq=False)
class Subscription:
    """One wait registered with the poller. Read updates with :meth:`get`."""

    dataset_id: str
    options: Any  # WaitOptions
    queue: asyncio.Queue[Update] = field(default_factory=asyncio.Queue)

    async def get(self) -> Update:
        return await self.queue.get()


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
