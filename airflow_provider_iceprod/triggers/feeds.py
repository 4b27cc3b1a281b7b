"""The poller's feeds: asset watchers that get every list answer of a connection's shared poller.

An :class:`~airflow_provider_iceprod.triggers.events.IceProdDatasetEventTrigger` registers a
:class:`Feed` with :meth:`DatasetPoller.watch <airflow_provider_iceprod.triggers.poller.DatasetPoller.watch>`
and reads a :class:`Listing` per interval. :class:`FeedSet` is the poller's bookkeeping for them:
which owners and groups the shared list may be filtered on, and when the feeds also need the
``status=complete`` list (a new feed, a dataset that left the active list, or every
:data:`RECONCILE_EVERY` intervals). Pure bookkeeping: no I/O, no event loop calls but queues.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Feeds also get the ``status=complete`` list at least every this many ticks, for datasets created
#: and completed between two lists (IceProd's crons make that rare).
RECONCILE_EVERY = 30


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
    """An event watcher registered with the poller.

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


class FeedSet:
    """The feeds of one poller, and what they ask of its list requests."""

    def __init__(self) -> None:
        self.feeds: list[Feed] = []
        self._listed: set[str] = set()  # ids of the last active list (who left it?)
        self._since_complete = 0  # ticks since the last complete list

    def __len__(self) -> int:
        return len(self.feeds)

    def add(self, feed: Feed) -> None:
        self.feeds.append(feed)

    def remove(self, feed: Feed) -> bool:
        """Idempotent; whether the feed was there."""
        if feed in self.feeds:
            self.feeds.remove(feed)
            return True
        return False

    def users(self) -> set[str] | None:
        """The owners every feed is limited to (``None``: a feed watches every owner)."""
        users: set[str] = set()
        for feed in self.feeds:
            if feed.users is None:
                return None
            users |= feed.users
        return users

    def groups_filter(self, has_waits: bool) -> list[str] | None:
        """A ``groups`` filter only when nothing but feeds that each name their groups listen."""
        if has_waits or not self.feeds or any(feed.groups is None for feed in self.feeds):
            return None
        return sorted(set().union(*(feed.groups or () for feed in self.feeds)))

    def want_complete(self, listed: Mapping[str, Any]) -> bool:
        """Feeds need the complete list: a new feed, a dataset left the active list, or a reconcile."""
        if not self.feeds:
            return False
        left = bool(self._listed - set(listed))
        return left or any(f.fresh for f in self.feeds) or self._since_complete >= RECONCILE_EVERY

    def deliver_lists(
        self, listed: dict[str, dict[str, Any]], done: dict[str, dict[str, Any]] | None
    ) -> None:
        """Hand this interval's lists to every feed."""
        if not self.feeds:
            return
        self._listed = set(listed)
        self._since_complete = 0 if done is not None else self._since_complete + 1
        self.deliver(Listing(active=listed, complete=done))

    def deliver(self, listing: Listing) -> None:
        for feed in self.feeds:
            if listing.error is None:
                feed.fresh = feed.fresh and listing.complete is None
            feed.queue.put_nowait(listing)
