"""``IceProdDatasetEventTrigger``: an asset watcher that fires when IceProd datasets finish.

Used through an ``AssetWatcher`` (see :func:`airflow_provider_iceprod.assets.iceprod_dataset_asset`),
it emits one event per dataset that matches its filter and enters a watched status (``complete``
by default; also ``errors``, ``suspended``), wherever the dataset was submitted.

It does not poll IceProd itself: it registers a feed with the connection's shared
:mod:`~airflow_provider_iceprod.triggers.poller`, so a hundred watchers (and every deferred wait)
cost the same one list request per interval as one. Final counts of a finished dataset are
fetched once, whatever the number of watchers.

What was reported is kept in Airflow's asset state store (Airflow 3.3+; an Airflow Variable
before) as a dataset-number high-water mark (:mod:`~airflow_provider_iceprod.triggers.watch_state`),
so a restarted triggerer neither repeats an event nor loses a dataset that finished while it was
down. The state is written *before* the event is handed to Airflow: a crash in between loses
that event rather than sending it twice.

Importing this module is cheap: the hook is imported inside ``run()``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypedDict

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_provider_iceprod.async_warmup import warm_async_path
from airflow_provider_iceprod.triggers.watch_state import WatchState

if TYPE_CHECKING:
    from airflow_provider_iceprod.triggers.poller import DatasetPoller

CLASSPATH = "airflow_provider_iceprod.triggers.events.IceProdDatasetEventTrigger"
#: Statuses a watcher can report (a dataset *entering* one of them is an event).
WATCHABLE_STATUSES = ("complete", "errors", "suspended")
#: Default poll interval of a watcher (seconds); IceProd's own crons move statuses every few minutes.
DEFAULT_POLL_INTERVAL = 60.0
STATE_KEY_PREFIX = "iceprod_watch_"
VARIABLE_PREFIX = "iceprod_watch_state__"


def _names(value: str | Iterable[str] | None, what: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    if not items or not all(isinstance(v, str) and v.strip() for v in items):
        raise ValueError(f"{what} must be a non-empty name or list of names, got {value!r}")
    return tuple(sorted({v.strip() for v in items}))


def _parse_time(value: Any) -> datetime | None:
    """IceProd timestamps are UTC without a suffix; compare everything as naive UTC."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value.strip():
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    else:
        return None
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


@dataclass(frozen=True)
class DatasetFilter:
    """Which datasets a watcher reports. ``None`` means "any"."""

    statuses: tuple[str, ...] = ("complete",)
    groups: tuple[str, ...] | None = None
    owners: tuple[str, ...] | None = None
    description: str | None = None
    numbers: tuple[int, ...] | None = None

    @classmethod
    def build(
        cls,
        *,
        status: str | Iterable[str] = "complete",
        group: str | Iterable[str] | None = None,
        owner: str | Iterable[str] | None = None,
        description: str | None = None,
        datasets: Iterable[int] | None = None,
    ) -> DatasetFilter:
        """Validate the arguments (a clear ``ValueError`` before anything runs)."""
        statuses = _names(status, "status") or ()
        bad = [s for s in statuses if s not in WATCHABLE_STATUSES]
        if bad:
            raise ValueError(f"status must be among {', '.join(WATCHABLE_STATUSES)}; got {', '.join(bad)}")
        if description is not None and (not isinstance(description, str) or not description.strip()):
            raise ValueError(f"description must be a non-empty glob pattern, got {description!r}")
        numbers: tuple[int, ...] | None = None
        if datasets is not None:
            items = [datasets] if isinstance(datasets, (int, str)) else list(datasets)
            if not items or any(
                isinstance(n, bool) or not str(n).strip().isdigit() or int(n) <= 0 for n in items
            ):
                raise ValueError(f"datasets must be positive dataset numbers, got {datasets!r}")
            numbers = tuple(sorted({int(n) for n in items}))
        return cls(
            statuses=statuses,
            groups=_names(group, "group"),
            owners=_names(owner, "owner"),
            description=description,
            numbers=numbers,
        )

    def matches(self, row: Mapping[str, Any]) -> bool:
        """Does a listed dataset match (any status)? Rows without a number never do."""
        number = row.get("dataset")
        if not isinstance(number, int) or isinstance(number, bool):
            return False
        if self.numbers is not None and number not in self.numbers:
            return False
        if self.groups is not None and row.get("group") not in self.groups:
            return False
        if self.owners is not None and row.get("username") not in self.owners:
            return False
        return self.description is None or fnmatch.fnmatchcase(
            str(row.get("description") or ""), self.description
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": list(self.statuses),
            "group": list(self.groups) if self.groups is not None else None,
            "owner": list(self.owners) if self.owners is not None else None,
            "description": self.description,
            "datasets": list(self.numbers) if self.numbers is not None else None,
        }

    def fingerprint(self, conn_id: str) -> str:
        """Stable id of (connection, filter): names the stored state (not the poll interval)."""
        text = json.dumps({"conn": conn_id, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def event_payload(
    row: Mapping[str, Any], counts: tuple[dict[str, int], dict[str, int]] | None
) -> dict[str, Any]:
    """The event for a dataset that entered a watched status (plain JSON: it becomes the asset event)."""
    return {
        "dataset_id": str(row.get("dataset_id")),
        "dataset": int(row["dataset"]),
        "description": str(row.get("description") or ""),
        "status": str(row.get("status") or ""),
        "group": row.get("group"),
        "owner": row.get("username"),
        "jobs_submitted": row.get("jobs_submitted"),
        "tasks_submitted": row.get("tasks_submitted"),
        "job_counts": counts[0] if counts is not None else None,
        "task_counts": counts[1] if counts is not None else None,
    }


class WatchArgs(TypedDict, total=False):
    """The keyword arguments of :class:`IceProdDatasetEventTrigger` (what to watch, how often),
    also taken by :func:`~airflow_provider_iceprod.assets.iceprod_dataset_asset`."""

    status: str | Iterable[str]
    group: str | Iterable[str] | None
    owner: str | Iterable[str] | None
    description: str | None
    datasets: Iterable[int] | None
    poll_interval: float
    replay_since: str | datetime | None


class IceProdDatasetEventTrigger(BaseEventTrigger):
    """Emit one event per IceProd dataset that matches and enters a watched status.

    Args:
        iceprod_conn_id: the ``iceprod`` connection.
        status: watched status or statuses: ``complete`` (default), ``errors``, ``suspended``.
        group: only datasets of this IceProd group (or groups), e.g. ``simprod``.
        owner: only datasets of this IceProd user (or users).
        description: a glob on the dataset description, e.g. ``IceCube-2026*`` (case-sensitive).
        datasets: only these dataset numbers.
        poll_interval: seconds between polls (the shared poller uses the shortest of its users).
        replay_since: on the very first start, also report datasets created (IceProd's
            ``start_date``; IceProd records no completion time) since this ISO date that are
            already in a watched status. Without it the first start reports only later changes.

    Event payload: ``dataset_id``, ``dataset`` (number), ``description``, ``status``, ``group``,
    ``owner``, ``jobs_submitted``, ``tasks_submitted``, ``job_counts``, ``task_counts`` (the last
    two ``None`` when IceProd did not answer).
    """

    def __init__(
        self,
        iceprod_conn_id: str = "iceprod_default",
        *,
        status: str | Iterable[str] = "complete",
        group: str | Iterable[str] | None = None,
        owner: str | Iterable[str] | None = None,
        description: str | None = None,
        datasets: Iterable[int] | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        replay_since: str | datetime | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(iceprod_conn_id, str) or not iceprod_conn_id.strip():
            raise ValueError(f"iceprod_conn_id must be a connection id, got {iceprod_conn_id!r}")
        if (
            isinstance(poll_interval, bool)
            or not isinstance(poll_interval, (int, float))
            or poll_interval <= 0
        ):
            raise ValueError(f"poll_interval must be a positive number of seconds, got {poll_interval!r}")
        try:
            since = _parse_time(replay_since)
        except ValueError:
            since = None
        if replay_since is not None and since is None:
            raise ValueError(f"replay_since must be an ISO date or datetime, got {replay_since!r}")
        self.iceprod_conn_id = iceprod_conn_id
        self.filter = DatasetFilter.build(
            status=status, group=group, owner=owner, description=description, datasets=datasets
        )
        self.poll_interval = float(poll_interval)
        self.replay_since = since.isoformat() if since is not None else None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "iceprod_conn_id": self.iceprod_conn_id,
                **self.filter.to_dict(),
                "poll_interval": self.poll_interval,
                "replay_since": self.replay_since,
            },
        )

    @property
    def state_key(self) -> str:
        return STATE_KEY_PREFIX + self.filter.fingerprint(self.iceprod_conn_id)

    # ------------------------------------------------------------------------------------ running

    async def run(self) -> AsyncIterator[TriggerEvent]:
        await warm_async_path()  # the hook's, auth's and HTTP imports: in a thread, not on the loop
        from airflow_provider_iceprod.triggers.poller import get_poller

        poller = get_poller(self.iceprod_conn_id)
        feed = poller.watch(
            users=frozenset(self.filter.owners) if self.filter.owners is not None else None,
            groups=frozenset(self.filter.groups) if self.filter.groups is not None else None,
            interval=self.poll_interval,
        )
        store = _StateStore(self)
        state = WatchState.from_dict(await store.load())
        last_error = ""
        try:
            while True:
                listing = await feed.get()
                if listing.error is not None:
                    message = f"{type(listing.error).__name__}: {listing.error}"
                    if message != last_error:  # a watcher keeps going; say each new problem once
                        self.log.warning("Watching IceProd datasets failed, retrying: %s", message)
                    last_error = message
                    continue
                last_error = ""
                rows = [r for r in (listing.active or {}).values() if self.filter.matches(r)]
                if listing.complete is not None:
                    rows += [r for r in listing.complete.values() if self.filter.matches(r)]
                if not state.started:
                    if listing.complete is None:  # the baseline needs every finished dataset too
                        continue
                    self._baseline(state, rows)
                    await store.save(state)
                for row in rows:
                    status = str(row.get("status") or "")
                    if status not in self.filter.statuses or state.seen(int(row["dataset"]), status):
                        continue
                    event = await self._event(poller, row)
                    state.mark(int(row["dataset"]), status)
                    await store.save(state)  # before the event: never twice, even after a crash
                    self.log.info(
                        "IceProd dataset %s (%s) is %s", row.get("dataset"), row.get("dataset_id"), status
                    )
                    yield TriggerEvent(event)
        finally:
            poller.unwatch(feed)

    def _baseline(self, state: WatchState, rows: list[dict[str, Any]]) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        state.baseline(rows, self.filter.statuses, created=now.isoformat())
        since = _parse_time(self.replay_since)
        replayed = 0
        for row in rows:
            started = _parse_time(row.get("start_date")) if since is not None else None
            status = str(row.get("status") or "")
            if started is not None and since is not None and started >= since and status in state.pending:
                state.pending[status].add(int(row["dataset"]))
                replayed += 1
        self.log.info(
            "Watching IceProd datasets %s from dataset number %s on (%s replayed since %s)",
            self.filter.to_dict(),
            state.floor,
            replayed,
            self.replay_since or "-",
        )

    async def _event(self, poller: DatasetPoller, row: dict[str, Any]) -> dict[str, Any]:
        counts: tuple[dict[str, int], dict[str, int]] | None = None
        try:
            counts = await poller.final_counts(str(row["dataset_id"]), str(row.get("status")))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the status alone is the event; counts are a courtesy
            self.log.warning("Counts for IceProd dataset %s failed: %s", row.get("dataset_id"), exc)
        return event_payload(row, counts)


class _StateStore:
    """Where a watcher's :class:`WatchState` lives.

    Airflow 3.3+ gives an asset watcher its asset's state store (``asset_state_store``, set by the
    triggerer). Before 3.3, or for a trigger shared by several assets (Airflow then raises
    ``ValueError`` for the unscoped accessor), an Airflow Variable named after the filter holds it.
    If neither is reachable (a plain script), it lives in memory.
    """

    def __init__(self, trigger: IceProdDatasetEventTrigger) -> None:
        self.trigger = trigger
        self.key = trigger.state_key
        self.variable = VARIABLE_PREFIX + trigger.filter.fingerprint(trigger.iceprod_conn_id)
        self.where = "asset" if getattr(trigger, "asset_state_store", None) is not None else "variable"

    async def load(self) -> Any:
        if self.where == "asset":
            try:
                return await self.trigger.asset_state_store.aget(self.key)  # type: ignore[union-attr]
            except ValueError:  # several assets share this trigger
                self.where = "variable"
        try:
            return await asyncio.to_thread(_variable_get, self.variable)
        except Exception as exc:
            self.where = "memory"
            self.trigger.log.warning(
                "No Airflow storage for the IceProd watcher state (%s): in memory only", exc
            )
            return None

    async def save(self, state: WatchState) -> None:
        value = state.to_dict()
        try:
            if self.where == "asset":
                await self.trigger.asset_state_store.aset(self.key, value)  # type: ignore[union-attr]
            elif self.where == "variable":
                await asyncio.to_thread(_variable_set, self.variable, value)
        except Exception as exc:  # say it once; the state stays in this process's memory
            self.where = "memory"
            self.trigger.log.warning("Could not store the IceProd watcher state, kept in memory: %s", exc)


def _variable_get(key: str) -> Any:
    from airflow.sdk import Variable

    return Variable.get(key, default=None, deserialize_json=True)


def _variable_set(key: str, value: Any) -> None:
    from airflow.sdk import Variable

    Variable.set(key, value, serialize_json=True)
