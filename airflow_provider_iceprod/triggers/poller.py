"""One shared poller per (connection, event loop): many dataset waits, about one request per interval.

Every :class:`~airflow_provider_iceprod.triggers.dataset.IceProdDatasetTrigger` in a triggerer
subscribes here instead of polling IceProd itself, and every
:class:`~airflow_provider_iceprod.triggers.events.IceProdDatasetEventTrigger` (an asset watcher)
registers a *feed* that receives the same list answer. Each poll interval the poller:

1. lists every waited-on dataset with **one** ``GET /datasets`` (``keys`` projection, ``status``
   filter ``processing|suspended|errors`` and, once the owners are known, a ``users`` filter), so
   the list does not grow with the (ever growing) number of completed datasets;
2. if a dataset is missing from that answer, sends **one** more list request with
   ``status=complete`` for all missing ones; a dataset still missing cannot be read by the token
   (or does not exist) and its subscribers get the error from a ``GET /datasets/{id}``;
3. refreshes task counts (``task_counts/status``) for at most ``count_budget`` running datasets,
   oldest counts first (round robin), each at most once per its own poll interval. A dataset
   whose tasks are all complete also gets ``job_counts/status`` (the cron-independent success
   check) in the same interval;
   Feeds get this complete list too, on their first interval, after a dataset left the active
   list (it completed), and every :data:`RECONCILE_EVERY` intervals;
4. for a dataset whose status ends a wait (``complete``, ``errors``, a target state, ...) fetches
   its final job and task counts once, a few at a time, so the final event carries them.

A waiter is woken only by news: fresh counts, a changed list row, the end of its wait or an
error, so a thousand idle waits cost a handful of wake-ups per interval, not a thousand; and a
tick yields to the event loop every :data:`YIELD_EVERY` rows.

Steady state therefore costs ``1 + count_budget`` requests per interval (5 by default) whatever
the number of waits; finishing costs two more requests per dataset, once. The trade-off: with
``N`` running datasets, each gets fresh task counts every ``ceil(N / count_budget)`` intervals,
so a stall is detected after about ``stall_polls * ceil(N / count_budget)`` intervals instead of
``stall_polls``. Status changes (complete, errors, suspended) are seen every interval.

All subscribers share one hook, hence one HTTP client and one access token (the token cache is
process-wide as well). The poller starts with its first subscriber and stops when the last one
leaves. All of it runs on the event loop without blocking it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_iceprod.exceptions import IceProdError
from airflow_provider_iceprod.models import DATASET_STATUSES, DatasetProgress
from airflow_provider_iceprod.waiting import WaitOptions, status_ends_wait

if TYPE_CHECKING:
    from airflow_provider_iceprod.hooks.iceprod import IceProdHook

log = logging.getLogger(__name__)

#: Projection of the shared list request (IceProd always adds the id field).
LIST_KEYS = (
    "dataset_id",
    "dataset",
    "status",
    "truncated",
    "jobs_submitted",
    "tasks_submitted",
    "username",
    "group",
    "description",
    "start_date",
)
#: Statuses listed every interval; ``complete`` is asked for only when a dataset went missing.
ACTIVE_STATUSES = ("processing", "suspended", "errors")
#: Count requests (``task_counts``) per interval for running datasets.
DEFAULT_COUNT_BUDGET = 4
#: Rows handled between two yields to the event loop.
YIELD_EVERY = 100
#: Concurrent requests for final counts of finishing datasets.
FINISH_CONCURRENCY = 4
#: Feeds (event watchers) also get the ``status=complete`` list at least every this many ticks, for
#: datasets created and completed between two lists (IceProd's crons make that rare).
RECONCILE_EVERY = 30
#: Final counts remembered for event watchers (one fetch per dataset and status, however many watch).
FINAL_COUNTS_KEPT = 256


@dataclass
class Update:
    """What a subscriber gets each interval: a progress view, or the error that prevented one.

    ``tasks_fresh``/``jobs_fresh``: whether the task/job counts in ``progress`` were fetched this
    interval (otherwise they are the last known ones, or empty).
    """

    progress: DatasetProgress | None = None
    tasks_fresh: bool = False
    jobs_fresh: bool = False
    error: BaseException | None = None


@dataclass(eq=False)
class Subscription:
    """One wait registered with the poller. Read updates with :meth:`get`."""

    dataset_id: str
    options: WaitOptions
    queue: asyncio.Queue[Update] = field(default_factory=asyncio.Queue)

    async def get(self) -> Update:
        return await self.queue.get()


@dataclass
class Listing:
    """What a feed gets each interval: the shared list answer, or the error that prevented it.

    ``active``: every listed ``processing|suspended|errors`` row (of the poller's filter, a superset
    of each feed's); ``complete``: the ``status=complete`` rows when they were listed this interval.
    """

    active: dict[str, dict[str, Any]] | None = None
    complete: dict[str, dict[str, Any]] | None = None
    error: BaseException | None = None


@dataclass(eq=False)
class Feed:
    """An event watcher registered with the poller (see :meth:`DatasetPoller.watch`).

    ``users``/``groups``: the owners/groups it needs (``None``: any); the shared list is filtered
    only on a field every subscriber constrains.
    """

    users: frozenset[str] | None
    groups: frozenset[str] | None
    interval: float
    queue: asyncio.Queue[Listing] = field(default_factory=asyncio.Queue)
    fresh: bool = True  # gets the complete list on its first tick

    async def get(self) -> Listing:
        return await self.queue.get()


@dataclass
class _Tracked:
    """What the poller knows about one dataset (shared by every subscription to it)."""

    row: dict[str, Any] | None = None
    job_counts: dict[str, int] = field(default_factory=dict)
    task_counts: dict[str, int] = field(default_factory=dict)
    counts_at: float = 0.0  # monotonic time of the last task-count refresh (0 = never)
    finished_status: str | None = None  # the status whose final counts were fetched
    # derived from the subscriptions (kept up to date by the poller, so a tick does no per-sub work)
    ending: frozenset[str] = frozenset()  # statuses that end at least one subscriber's wait
    interval: float = 60.0  # the shortest poll interval of its subscribers


class DatasetPoller:
    """Coalesces the polling of many dataset waits on one connection in one event loop.

    Use :func:`get_poller`; do not build one directly.
    """

    def __init__(
        self,
        conn_id: str,
        loop: asyncio.AbstractEventLoop,
        *,
        hook_params: Mapping[str, Any] | None = None,
        count_budget: int = DEFAULT_COUNT_BUDGET,
    ) -> None:
        self.conn_id = conn_id
        self.count_budget = count_budget
        self._loop = loop
        self._hook_params = dict(hook_params or {})
        self._subs: dict[str, list[Subscription]] = {}
        self._feeds: list[Feed] = []
        self._listed: set[str] = set()  # ids of the last active list (feeds: who left it?)
        self._since_complete = 0  # ticks since the last complete list
        self._final: dict[tuple[str, str], asyncio.Task[tuple[dict[str, int], dict[str, int]]]] = {}
        self._tracked: dict[str, _Tracked] = {}
        self._task: asyncio.Task[None] | None = None
        self._finish_sem = asyncio.Semaphore(FINISH_CONCURRENCY)
        self._finishing: dict[str, asyncio.Task[None]] = {}  # final-count fetches in flight
        self._users: list[str] | None = None  # cached ``users`` filter (None: recompute)
        self._interval = float("inf")  # the shortest poll interval of all subscribers
        #: Requests sent, by kind (list, list_complete, get, task_counts, job_counts, by_name).
        self.requests: dict[str, int] = {}
        self.ticks = 0

    # ------------------------------------------------------------------------------ subscriptions

    def subscribe(self, dataset_id: str, options: WaitOptions) -> Subscription:
        sub = Subscription(dataset_id, options)
        self._subs.setdefault(dataset_id, []).append(sub)
        self._tracked.setdefault(dataset_id, _Tracked())
        self._subscriptions_changed(dataset_id)
        self._start()
        return sub

    def watch(
        self, *, users: frozenset[str] | None = None, groups: frozenset[str] | None = None, interval: float
    ) -> Feed:
        """Register an event watcher: it gets every list answer (:class:`Listing`) of the poller."""
        feed = Feed(users, groups, float(interval))
        self._feeds.append(feed)
        self._users = None
        self._interval = min(self._interval, feed.interval)
        self._start()
        return feed

    def unwatch(self, feed: Feed) -> None:
        """Idempotent. The poller stops with its last subscriber or feed."""
        if feed in self._feeds:
            self._feeds.remove(feed)
            self._users = None
        if not self._subs and not self._feeds:
            self._stop()

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run(), name=f"iceprod-poller-{self.conn_id}")

    def unsubscribe(self, sub: Subscription) -> None:
        """Idempotent. The poller stops (and leaves the registry) with its last subscriber."""
        subs = self._subs.get(sub.dataset_id)
        if subs and sub in subs:
            subs.remove(sub)
            if subs:
                self._subscriptions_changed(sub.dataset_id)
            else:
                del self._subs[sub.dataset_id]
                self._tracked.pop(sub.dataset_id, None)
                self._users = None
        if not self._subs and not self._feeds:
            self._stop()

    def _subscriptions_changed(self, dataset_id: str) -> None:
        tracked = self._tracked[dataset_id]
        subs = self._subs[dataset_id]
        tracked.ending = frozenset(
            s for sub in subs for s in DATASET_STATUSES if status_ends_wait(s, sub.options)
        )
        tracked.interval = min(sub.options.poll_interval for sub in subs)
        self._users = None
        self._interval = min(self._interval, tracked.interval)  # widened again after each tick

    @property
    def subscribers(self) -> int:
        return sum(len(s) for s in self._subs.values())

    @property
    def feeds(self) -> int:
        return len(self._feeds)

    def _stop(self) -> None:
        _forget(self)
        task, self._task = self._task, None
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
        for finishing in [*self._finishing.values(), *self._final.values()]:
            finishing.cancel()

    # --------------------------------------------------------------------------------------- hook

    @cached_property
    def hook(self) -> IceProdHook:
        """The one hook every subscriber shares (built on first use; no I/O)."""
        from airflow_provider_iceprod.hooks.iceprod import IceProdHook

        return IceProdHook(self.conn_id, **self._hook_params)

    def _count(self, kind: str, n: int = 1) -> None:
        self.requests[kind] = self.requests.get(kind, 0) + n

    async def task_counts_by_name(self, dataset_id: str) -> dict[str, dict[str, int]]:
        """Per-name task counts (for the names of failed tasks in a stall message)."""
        async with self._finish_sem:
            self._count("by_name")
            return await self.hook.atask_counts_by_name(dataset_id)

    async def final_counts(self, dataset_id: str, status: str) -> tuple[dict[str, int], dict[str, int]]:
        """Job and task counts of a dataset that reached ``status``, fetched once for all watchers."""
        key = (dataset_id, status)
        task = self._final.get(key)
        if task is None:
            task = self._loop.create_task(self._fetch_final(dataset_id))
            task.add_done_callback(functools.partial(self._final_done, key))
            self._final[key] = task
            while len(self._final) > FINAL_COUNTS_KEPT:
                del self._final[next(iter(self._final))]
        return await asyncio.shield(task)

    def _final_done(self, key: tuple[str, str], task: asyncio.Task[Any]) -> None:
        failed = task.cancelled() or task.exception() is not None
        if failed and self._final.get(key) is task:  # the next watcher asks again
            del self._final[key]

    async def _fetch_final(self, dataset_id: str) -> tuple[dict[str, int], dict[str, int]]:
        hook = self.hook
        async with self._finish_sem:
            self._count("job_counts")
            self._count("task_counts")
            jobs, tasks = await asyncio.gather(hook.ajob_counts(dataset_id), hook.atask_counts(dataset_id))
        return dict(jobs), dict(tasks)

    # --------------------------------------------------------------------------------------- loop

    async def _run(self) -> None:
        try:
            await self.hook.aget_settings()
        except Exception as exc:  # the connection itself is broken: every wait ends with it
            self._deliver_error(set(self._subs), exc)
            self._deliver_feeds(Listing(error=exc))
        while self._subs or self._feeds:
            started = time.monotonic()
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let one bad answer kill every wait silently
                log.exception("IceProd poller for %s: poll failed", self.conn_id)
                self._deliver_error(set(self._subs), exc)
                self._deliver_feeds(Listing(error=exc))
            self.ticks += 1
            intervals = [t.interval for t in self._tracked.values()] + [f.interval for f in self._feeds]
            self._interval = min(intervals, default=60.0)
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(self._interval - elapsed, 0.0))

    async def _tick(self) -> None:
        ids = set(self._subs)
        if not ids and not self._feeds:
            return
        hook = self.hook
        rows = await self._list(hook, ids)
        if rows is None:
            return
        now = time.monotonic()
        running: list[tuple[float, str]] = []
        changed: list[str] = []
        tracked_by_id = self._tracked
        for n, (dataset_id, row) in enumerate(rows.items(), 1):
            if n % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let other waits run: never block the loop for long
            tracked = tracked_by_id.get(dataset_id)
            if tracked is None:  # its last waiter left while the list was in flight
                continue
            previous = tracked.row
            news = previous is None or previous != row
            if news:
                tracked.row = row  # an unchanged row keeps the old dict: the new one dies young (less GC)
            status = row.get("status")
            if status in tracked.ending and status != tracked.finished_status:
                self._start_finish(hook, dataset_id)
            elif not tracked.counts_at or now - tracked.counts_at >= tracked.interval * 0.95:
                running.append((tracked.counts_at, dataset_id))
            if news and previous is not None:
                changed.append(dataset_id)
        running.sort()
        refresh = [dataset_id for _, dataset_id in running[: self.count_budget]]
        # Only news wakes a waiter: fresh counts, a changed row, or the end. A thousand idle waits
        # therefore cost a handful of wake-ups per interval, not a thousand.
        busy = set(refresh) | set(self._finishing)
        for dataset_id in changed:
            if dataset_id not in busy:
                self._deliver(dataset_id, False, False)
        await asyncio.gather(*(self._refresh(hook, d, now) for d in refresh))

    def _start_finish(self, hook: IceProdHook, dataset_id: str) -> None:
        """Fetch a finishing dataset's final counts in the background (the tick does not wait)."""
        if dataset_id in self._finishing:
            return
        task = self._loop.create_task(self._finish(hook, dataset_id))
        self._finishing[dataset_id] = task
        task.add_done_callback(functools.partial(self._finished, dataset_id))

    def _finished(self, dataset_id: str, _task: asyncio.Task[None]) -> None:
        self._finishing.pop(dataset_id, None)

    def _users_filter(self, ids: set[str]) -> list[str] | None:
        """The owners of the waited datasets (cached until the subscriptions change)."""
        if self._users is not None:
            return self._users
        users: set[str] = set()
        for feed in self._feeds:
            if feed.users is None:
                return None  # a feed watches every owner
            users |= feed.users
        for dataset_id in ids:
            row = self._tracked[dataset_id].row if dataset_id in self._tracked else None
            if not row or not row.get("username"):
                return None  # an owner is not known yet: list without the users filter this time
            users.add(str(row["username"]))
        self._users = sorted(users)
        return self._users

    def _groups_filter(self, ids: set[str]) -> list[str] | None:
        """A ``groups`` filter only when nothing but feeds that each name their groups listen."""
        if ids or not self._feeds or any(feed.groups is None for feed in self._feeds):
            return None
        return sorted(set().union(*(feed.groups or () for feed in self._feeds)))

    def _feeds_want_complete(self, listed: Mapping[str, Any]) -> bool:
        """Feeds need the complete list: a new feed, a dataset left the active list, or a reconcile."""
        if not self._feeds:
            return False
        left = bool(self._listed - set(listed))
        return left or any(f.fresh for f in self._feeds) or self._since_complete >= RECONCILE_EVERY

    async def _list(self, hook: IceProdHook, ids: set[str]) -> dict[str, dict[str, Any]] | None:
        users = self._users_filter(ids)
        groups = self._groups_filter(ids)
        done: dict[str, dict[str, Any]] | None = None
        try:
            self._count("list")
            listed = await hook.alist_datasets(
                status=list(ACTIVE_STATUSES), users=users, groups=groups, keys=list(LIST_KEYS)
            )
            rows = {d: listed[d] for d in ids if d in listed}
            missing = ids - set(rows)
            if missing or self._feeds_want_complete(listed):
                self._count("list_complete")
                done = await hook.alist_datasets(
                    status=["complete"], users=users, groups=groups, keys=list(LIST_KEYS)
                )
                rows.update({d: done[d] for d in missing if d in done})
        except Exception as exc:
            self._deliver_error(ids, exc)
            self._deliver_feeds(Listing(error=exc))
            return None
        if self._feeds:
            self._listed = set(listed)
            self._since_complete = 0 if done is not None else self._since_complete + 1
            self._deliver_feeds(Listing(active=listed, complete=done))
        await asyncio.gather(*(self._lookup_missing(hook, d, rows) for d in ids - set(rows)))
        return rows

    async def _lookup_missing(
        self, hook: IceProdHook, dataset_id: str, rows: dict[str, dict[str, Any]]
    ) -> None:
        """A dataset no list showed: ask for it directly to get IceProd's own error (403/404)."""
        try:
            async with self._finish_sem:
                self._count("get")
                dataset = await hook.aget_dataset(dataset_id)
        except Exception as exc:
            self._deliver_error({dataset_id}, exc)
            return
        rows[dataset_id] = {k: dataset.raw.get(k) for k in LIST_KEYS if k in dataset.raw} | {
            "dataset_id": dataset.dataset_id,
            "status": dataset.status,
        }

    async def _refresh(self, hook: IceProdHook, dataset_id: str, now: float) -> None:
        """Fresh task counts (and job counts when every task is complete), then deliver.

        A failed count request leaves the counts stale; the update still carries the new row.
        """
        tracked = self._tracked.get(dataset_id)
        if tracked is None:  # its last waiter left meanwhile
            return
        tasks_fresh = jobs_fresh = False
        try:
            self._count("task_counts")
            tracked.task_counts = dict(await hook.atask_counts(dataset_id))
            tracked.counts_at = now
            tasks_fresh = True
            if _tasks_all_complete(tracked):
                self._count("job_counts")
                tracked.job_counts = dict(await hook.ajob_counts(dataset_id))
                jobs_fresh = True
        except IceProdError as exc:
            log.warning("IceProd poller: counts for dataset %s failed: %s", dataset_id, exc)
        self._deliver(dataset_id, tasks_fresh, jobs_fresh)

    async def _finish(self, hook: IceProdHook, dataset_id: str) -> None:
        """Final job and task counts for a dataset whose status ends a wait (once per status)."""
        tracked = self._tracked.get(dataset_id)
        if tracked is None:
            return
        fresh = False
        try:
            async with self._finish_sem:
                self._count("job_counts")
                self._count("task_counts")
                jobs, tasks = await asyncio.gather(
                    hook.ajob_counts(dataset_id), hook.atask_counts(dataset_id)
                )
            tracked.job_counts, tracked.task_counts = dict(jobs), dict(tasks)
            fresh = True
        except IceProdError as exc:  # the status alone decides; the event carries the last counts
            log.warning("IceProd poller: final counts for dataset %s failed: %s", dataset_id, exc)
        if tracked.row is not None:
            tracked.finished_status = str(tracked.row.get("status", ""))
        self._deliver(dataset_id, fresh, fresh)

    # ---------------------------------------------------------------------------------- delivery

    def _deliver(self, dataset_id: str, tasks_fresh: bool, jobs_fresh: bool) -> None:
        tracked = self._tracked.get(dataset_id)
        if tracked is None or tracked.row is None:
            return
        progress = progress_from_row(tracked.row, tracked.job_counts, tracked.task_counts)
        for sub in self._subs.get(dataset_id, []):
            sub.queue.put_nowait(Update(progress, tasks_fresh, jobs_fresh))

    def _deliver_feeds(self, listing: Listing) -> None:
        for feed in self._feeds:
            if listing.error is None:
                feed.fresh = feed.fresh and listing.complete is None
            feed.queue.put_nowait(listing)

    def _deliver_error(self, ids: set[str], exc: BaseException) -> None:
        for dataset_id in ids:
            for sub in self._subs.get(dataset_id, []):
                sub.queue.put_nowait(Update(error=exc))


def _tasks_all_complete(tracked: _Tracked) -> bool:
    counts = {k: v for k, v in tracked.task_counts.items() if v}
    if set(counts) != {"complete"} or tracked.row is None:
        return False
    if tracked.row.get("truncated"):
        return True
    return counts["complete"] >= int(tracked.row.get("tasks_submitted") or 0)


def progress_from_row(
    row: Mapping[str, Any], job_counts: Mapping[str, int], task_counts: Mapping[str, int]
) -> DatasetProgress:
    return DatasetProgress(
        dataset_id=str(row["dataset_id"]),
        dataset=int(row.get("dataset") or 0),
        status=str(row.get("status") or ""),
        truncated=bool(row.get("truncated", False)),
        jobs_submitted=int(row.get("jobs_submitted") or 0),
        tasks_submitted=int(row.get("tasks_submitted") or 0),
        job_counts=dict(job_counts),
        task_counts=dict(task_counts),
    )


# ------------------------------------------------------------------------------------ registry

_lock = threading.Lock()
_pollers: dict[tuple[str, int], DatasetPoller] = {}


def count_budget_setting() -> int:
    """``[iceprod] poller_count_budget`` (count requests per interval), default 4."""
    try:
        from airflow.sdk import conf

        value = conf.getint("iceprod", "poller_count_budget", fallback=DEFAULT_COUNT_BUDGET)
    except Exception:
        value = DEFAULT_COUNT_BUDGET
    return max(int(value), 1)


def get_poller(
    conn_id: str, *, hook_params: Mapping[str, Any] | None = None, count_budget: int | None = None
) -> DatasetPoller:
    """The poller for ``conn_id`` on the running event loop (created on first use).

    The first caller's ``hook_params`` and ``count_budget`` apply to the whole poller.
    """
    loop = asyncio.get_running_loop()
    key = (conn_id, id(loop))
    with _lock:
        poller = _pollers.get(key)
        if poller is None or poller._loop is not loop:
            budget = count_budget if count_budget is not None else count_budget_setting()
            poller = DatasetPoller(conn_id, loop, hook_params=hook_params, count_budget=budget)
            _pollers[key] = poller
        return poller


def _forget(poller: DatasetPoller) -> None:
    with _lock:
        key = (poller.conn_id, id(poller._loop))
        if _pollers.get(key) is poller:
            del _pollers[key]


def active_pollers() -> list[DatasetPoller]:
    """Pollers currently running in this process (for tests and diagnostics)."""
    with _lock:
        return list(_pollers.values())
