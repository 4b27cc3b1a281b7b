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
   list (it completed), and every :data:`~airflow_provider_iceprod.triggers.feeds.RECONCILE_EVERY` intervals;
4. for a dataset whose status ends a wait (``complete``, ``errors``, a target state, ...) wakes
   its waiters at once with the listed row and the last known counts (``Update.final``). The
   triggerer sends no request per finishing dataset: the trigger's event says its counts are not
   final, and the task's ``execute_complete`` (in a worker) fetches them
   (:func:`airflow_provider_iceprod.wait_loop.complete_counts`), so a thousand datasets finishing
   together cost the one list call that saw them finish.

A waiter is woken only by news: fresh counts, a changed list row, the end of its wait or an
error, so a thousand idle waits cost a handful of wake-ups per interval, not a thousand; and a
tick yields to the event loop every :data:`YIELD_EVERY` rows. A burst of new waits subscribes in
batches of :data:`~airflow_provider_iceprod.triggers.admission.BATCH` per pass of the event loop
(the trigger passes :func:`~airflow_provider_iceprod.triggers.admission.admit` first), so starting
a thousand waits does not block the loop either.

The feeds' bookkeeping is in :mod:`~airflow_provider_iceprod.triggers.feeds`, the records the
poller keeps and hands out in :mod:`~airflow_provider_iceprod.triggers.tracking`.

Steady state therefore costs ``1 + count_budget`` requests per interval (5 by default) whatever
the number of waits; finishing costs one ``status=complete`` list per interval while datasets
finish, whatever their number. The trade-off: with
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
import heapq
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_iceprod.exceptions import IceProdError
from airflow_provider_iceprod.models import DATASET_STATUSES, DatasetProgress
from airflow_provider_iceprod.triggers.deadlines import DeadlineTimer
from airflow_provider_iceprod.triggers.feeds import Feed, FeedSet, Listing
from airflow_provider_iceprod.triggers.tracking import (
    LIST_KEYS,
    WAIT_KEYS,
    Subscription,
    Tracked,
    Update,
    tasks_all_complete,
)
from airflow_provider_iceprod.waiting import WaitOptions, outage_pause, status_ends_wait

if TYPE_CHECKING:
    from airflow_provider_iceprod.hooks.iceprod import IceProdHook

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Statuses listed every interval; ``complete`` is asked for only when a dataset went missing.
ACTIVE_STATUSES = ("processing", "suspended", "errors")
#: Count requests (``task_counts``) per interval for running datasets.
DEFAULT_COUNT_BUDGET = 4
#: Rows handled between two yields to the event loop.
YIELD_EVERY = 100
#: Ids looked up (a dict lookup or a key each) between two yields, for 10,000 waits and more.
SCAN_EVERY = 2000
#: Concurrent per-dataset requests (watchers' final counts, failed task names, unlisted datasets).
FINISH_CONCURRENCY = 4
#: Final counts remembered for event watchers (one fetch per dataset and status, however many watch).
FINAL_COUNTS_KEPT = 256


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
        self._feeds = FeedSet()
        self._final: dict[tuple[str, str], asyncio.Task[tuple[dict[str, int], dict[str, int]]]] = {}
        self._tracked: dict[str, Tracked] = {}
        self._task: asyncio.Task[None] | None = None
        self._deadlines = DeadlineTimer(loop)
        self._finish_sem = asyncio.Semaphore(FINISH_CONCURRENCY)
        self._users: list[str] | None = None  # cached ``users`` filter (None: recompute)
        self._owners_changed = 0  # bumped with every reset of _users (a filter computed meanwhile is stale)
        self._interval = float("inf")  # the shortest poll interval of all subscribers
        #: Requests sent, by kind (list, list_complete, get, task_counts, job_counts, by_name).
        self.requests: dict[str, int] = {}
        self.ticks = 0
        self.failed_polls = 0  # list calls failed in a row (an outage): the poll pause grows

    # ------------------------------------------------------------------------------ subscriptions

    def subscribe(self, dataset_id: str, options: WaitOptions, deadline: float | None = None) -> Subscription:
        """Register a wait. ``deadline``: wall-clock epoch seconds (``time.time()``) after which its
        :meth:`~Subscription.next_update` raises ``TimeoutError``; ``None`` waits forever."""
        when = None if deadline is None else self._loop.time() + (deadline - time.time())
        sub = Subscription(dataset_id, options, self._loop, when)
        self._deadlines.add(sub)
        self._subs.setdefault(dataset_id, []).append(sub)
        tracked = self._tracked.setdefault(dataset_id, Tracked())
        tracked.finished_status = None  # a new waiter of a finished dataset hears about it too
        self._subscriptions_changed(dataset_id)
        self._start()
        return sub

    def watch(
        self, *, users: frozenset[str] | None = None, groups: frozenset[str] | None = None, interval: float
    ) -> Feed:
        """Register an event watcher: it gets every list answer (:class:`Listing`) of the poller."""
        feed = Feed(users, groups, float(interval))
        self._feeds.add(feed)
        self._forget_users()
        self._interval = min(self._interval, feed.interval)
        self._start()
        return feed

    def unwatch(self, feed: Feed) -> None:
        """Idempotent. The poller stops with its last subscriber or feed."""
        if self._feeds.remove(feed):
            self._forget_users()
        if not self._subs and not self._feeds:
            self._stop()

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = self._loop.create_task(self._run(), name=f"iceprod-poller-{self.conn_id}")

    def unsubscribe(self, sub: Subscription) -> None:
        """Idempotent. The poller stops (and leaves the registry) with its last subscriber."""
        if not sub.closed:
            sub.close()
            self._deadlines.discard(sub)
        subs = self._subs.get(sub.dataset_id)
        if subs and sub in subs:
            subs.remove(sub)
            if subs:
                self._subscriptions_changed(sub.dataset_id)
            else:
                del self._subs[sub.dataset_id]
                self._tracked.pop(sub.dataset_id, None)
                self._forget_users()
        if not self._subs and not self._feeds:
            self._stop()

    def _subscriptions_changed(self, dataset_id: str) -> None:
        tracked = self._tracked[dataset_id]
        subs = self._subs[dataset_id]
        tracked.ending = _shared(
            frozenset(s for sub in subs for s in DATASET_STATUSES if status_ends_wait(s, sub.options))
        )
        tracked.interval = min(sub.options.poll_interval for sub in subs)
        self._forget_users()
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
        for finishing in self._final.values():
            finishing.cancel()
        self._deadlines.cancel()

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
            self._feeds.deliver(Listing(error=exc))
        while self._subs or self._feeds:
            started = time.monotonic()
            try:
                await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let one bad answer kill every wait silently
                log.exception("IceProd poller for %s: poll failed", self.conn_id)
                self._deliver_error(set(self._subs), exc)
                self._feeds.deliver(Listing(error=exc))
            self.ticks += 1
            self._interval = await self._shortest_interval()
            elapsed = time.monotonic() - started
            # An outage (the list call keeps failing): back off, one poll for every wait at a time.
            pause = outage_pause(self._interval, self.failed_polls)
            await asyncio.sleep(max(pause - elapsed, 0.0))

    async def _shortest_interval(self) -> float:
        """The shortest poll interval of every wait and feed (60 s with none), in short steps."""
        shortest = min((f.interval for f in self._feeds.feeds), default=float("inf"))
        async for tracked in in_steps(list(self._tracked.values()), SCAN_EVERY):
            if tracked.interval < shortest:
                shortest = tracked.interval
        return 60.0 if shortest == float("inf") else shortest

    async def _tick(self) -> None:
        ids = set(self._subs)
        if not ids and not self._feeds:
            return
        hook = self.hook
        rows = await self._list(hook, ids)
        if rows is None:
            return
        now = time.monotonic()
        # ids only (strings are not tracked by the garbage collector): a tuple per row would outlive
        # the tick's yields, and ten thousand a tick would soon cost a full collection of the heap
        running: list[str] = []
        changed: list[str] = []
        ending: list[str] = []
        tracked_by_id = self._tracked
        # popped, not iterated: each answer row no wait keeps is freed in its step, not all at the
        # end of the tick (freeing ten thousand decoded rows at once holds the loop for ~30 ms)
        async for dataset_id, row in in_steps(_drain(rows)):
            tracked = tracked_by_id.get(dataset_id)
            if tracked is None:  # its last waiter left while the list was in flight
                continue
            previous = tracked.row
            news = previous is None or previous != row
            if news:
                tracked.row = row  # an unchanged row keeps the old dict: the new one dies young (less GC)
            status = row.get("status")
            if status in tracked.ending:
                if status != tracked.finished_status:
                    tracked.finished_status = str(status)
                    ending.append(dataset_id)
            else:
                tracked.finished_status = None
                if not tracked.counts_at or now - tracked.counts_at >= tracked.interval * 0.95:
                    running.append(dataset_id)
            if news and previous is not None:
                changed.append(dataset_id)

        def oldest_counts_first(dataset_id: str) -> tuple[float, str]:  # then by id: round robin
            tracked = tracked_by_id.get(dataset_id)  # None: its last waiter left during the tick
            return (tracked.counts_at if tracked is not None else 0.0, dataset_id)

        # the count_budget oldest, a slice at a time (ten thousand keys at once would block the loop)
        refresh: list[str] = []
        for start in range(0, len(running), SCAN_EVERY):
            if start:
                await asyncio.sleep(0)
            candidates = refresh + running[start : start + SCAN_EVERY]
            refresh = heapq.nsmallest(self.count_budget, candidates, key=oldest_counts_first)
        # Only news wakes a waiter: fresh counts, a changed row, or the end. A thousand idle waits
        # therefore cost a handful of wake-ups per interval, not a thousand.
        # A status that ends a wait is delivered at once, with the last known counts: the list
        # that saw it is all the triggerer asks for (the worker's execute_complete fetches the
        # final counts), so a burst of completions costs no request per dataset here.
        async for dataset_id in in_steps(ending):  # a thousand finishing together: still short steps
            self._deliver(dataset_id, False, False, final=True)
        busy = set(refresh) | set(ending)
        async for dataset_id in in_steps(changed):
            if dataset_id not in busy:
                self._deliver(dataset_id, False, False)
        await asyncio.gather(*(self._refresh(hook, d, now) for d in refresh))

    def _forget_users(self) -> None:
        self._users = None
        self._owners_changed += 1

    async def _users_filter(self, ids: set[str]) -> list[str] | None:
        """The owners of the waited datasets and of the feeds (cached until either changes)."""
        if self._users is not None:
            return self._users
        users = self._feeds.users()
        if users is None:
            return None  # a feed watches every owner
        changes = self._owners_changed
        async for dataset_id in in_steps(ids, SCAN_EVERY):
            tracked = self._tracked.get(dataset_id)
            row = tracked.row if tracked is not None else None
            if not row or not row.get("username"):
                return None  # an owner is not known yet: list without the users filter this time
            users.add(str(row["username"]))
        found = sorted(users)
        if changes == self._owners_changed:  # no wait came or went while it was computed
            self._users = found
        return found

    async def _list(self, hook: IceProdHook, ids: set[str]) -> dict[str, dict[str, Any]] | None:
        users = await self._users_filter(ids)
        groups = self._feeds.groups_filter(bool(ids))
        keys = list(LIST_KEYS if self._feeds else WAIT_KEYS)  # the smallest answer that serves all
        done: dict[str, dict[str, Any]] | None = None
        try:
            self._count("list")
            listed = await hook.alist_datasets(
                status=list(ACTIVE_STATUSES), users=users, groups=groups, keys=keys
            )
            rows: dict[str, dict[str, Any]] = {}
            unseen = missing = await _pick(ids, listed, rows)
            if missing or self._feeds.want_complete(listed):
                self._count("list_complete")
                done = await hook.alist_datasets(status=["complete"], users=users, groups=groups, keys=keys)
                unseen = await _pick(missing, done, rows)
        except Exception as exc:
            self.failed_polls += 1
            self._deliver_error(ids, exc)
            self._feeds.deliver(Listing(error=exc))
            return None
        self.failed_polls = 0
        self._feeds.deliver_lists(listed, done)
        await asyncio.gather(*(self._lookup_missing(hook, d, rows) for d in unseen))
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
            if tasks_all_complete(tracked):
                self._count("job_counts")
                tracked.job_counts = dict(await hook.ajob_counts(dataset_id))
                jobs_fresh = True
        except IceProdError as exc:
            log.warning("IceProd poller: counts for dataset %s failed: %s", dataset_id, exc)
        self._deliver(dataset_id, tasks_fresh, jobs_fresh)

    # ---------------------------------------------------------------------------------- delivery

    def _deliver(self, dataset_id: str, tasks_fresh: bool, jobs_fresh: bool, *, final: bool = False) -> None:
        tracked = self._tracked.get(dataset_id)
        if tracked is None or tracked.row is None:
            return
        progress = DatasetProgress.from_row(tracked.row, tracked.job_counts, tracked.task_counts)
        for sub in self._subs.get(dataset_id, []):
            sub.put(Update(progress, tasks_fresh, jobs_fresh, final=final))

    def _deliver_error(self, ids: set[str], exc: BaseException) -> None:
        for dataset_id in ids:
            for sub in self._subs.get(dataset_id, []):
                sub.put(Update(error=exc))


_ENDING_SETS: dict[frozenset[str], frozenset[str]] = {}


def _shared(statuses: frozenset[str]) -> frozenset[str]:
    """One frozenset object per distinct set of statuses (a thousand waits share a handful)."""
    return _ENDING_SETS.setdefault(statuses, statuses)


async def in_steps(items: Iterable[T], every: int = YIELD_EVERY) -> AsyncIterator[T]:
    """``items``, yielding to the event loop every ``every`` of them (never a long step)."""
    for n, item in enumerate(items, 1):
        if n % every == 0:
            await asyncio.sleep(0)
        yield item


def _drain(rows: dict[str, dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Empty ``rows`` item by item (the caller's reference to each row is its last)."""
    while rows:
        yield rows.popitem()


async def _pick(
    ids: Iterable[str], listed: Mapping[str, dict[str, Any]], rows: dict[str, dict[str, Any]]
) -> list[str]:
    """Add the listed rows of ``ids`` to ``rows``; returns the ids the list did not have."""
    missing: list[str] = []
    async for dataset_id in in_steps(ids, SCAN_EVERY):
        if dataset_id in listed:
            rows[dataset_id] = listed[dataset_id]
        else:
            missing.append(dataset_id)
    return missing


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
