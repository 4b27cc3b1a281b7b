"""What an IceProd dataset watcher remembers between polls and across triggerer restarts (pure, no I/O).

IceProd records no time of a status change, so the watcher cannot keep a timestamp high-water
mark. It keeps a **dataset-number** high-water mark instead (numbers only grow):

* ``floor``: the highest dataset number known when the watcher first started. Every matching
  dataset at or below it that was already in a watched status then is "seen" (it is history).
* ``pending``: for each watched status, the matching datasets at or below ``floor`` that were *not*
  in that status at the first start (they were still running). Entering it later is news.
* ``emitted``: for each watched status, the dataset numbers an event was emitted for, as ranges.

So ``(dataset, status)`` is news exactly once: above the floor, or pending, and not emitted yet.
The state stays small: the pending sets only shrink, and ``emitted`` grows by one number per
event (stored as ``[first, last]`` ranges). It is plain JSON for Airflow's asset state store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

STATE_VERSION = 1


def _to_ranges(numbers: Iterable[int]) -> list[list[int]]:
    ranges: list[list[int]] = []
    for n in sorted(set(numbers)):
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1][1] = n
        else:
            ranges.append([n, n])
    return ranges


def _from_ranges(ranges: Iterable[Any]) -> set[int]:
    out: set[int] = set()
    for item in ranges:
        first, last = (int(item[0]), int(item[1])) if isinstance(item, (list, tuple)) else (int(item),) * 2
        out.update(range(first, last + 1))
    return out


@dataclass
class WatchState:
    """The high-water mark of one watcher. ``started`` is ``False`` until the first baseline."""

    floor: int = 0
    pending: dict[str, set[int]] = field(default_factory=dict)
    emitted: dict[str, set[int]] = field(default_factory=dict)
    created: str = ""
    started: bool = False

    def seen(self, number: int, status: str) -> bool:
        """Was ``(number, status)`` already reported (or history at the first start)?"""
        if number in self.emitted.get(status, ()):
            return True
        return number <= self.floor and number not in self.pending.get(status, ())

    def mark(self, number: int, status: str) -> None:
        """Record an emitted event for ``(number, status)``."""
        self.emitted.setdefault(status, set()).add(number)
        self.pending.get(status, set()).discard(number)

    def baseline(self, rows: Iterable[Mapping[str, Any]], statuses: Iterable[str], *, created: str) -> None:
        """First start: everything matching now is history, except what has yet to enter a status.

        ``rows`` are all matching datasets (every status) the watcher can see right now.
        """
        statuses = list(statuses)
        numbers = {int(row["dataset"]): str(row.get("status", "")) for row in rows}
        self.floor = max(numbers, default=0)
        self.pending = {s: {n for n, st in numbers.items() if st != s} for s in statuses}
        self.emitted = {s: set() for s in statuses}
        self.created = created
        self.started = True

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "created": self.created,
            "floor": self.floor,
            "pending": {s: _to_ranges(ns) for s, ns in self.pending.items()},
            "emitted": {s: _to_ranges(ns) for s, ns in self.emitted.items()},
        }

    @classmethod
    def from_dict(cls, data: Any) -> WatchState:
        """The stored state, or a fresh one for ``None`` / an unknown version."""
        if not isinstance(data, Mapping) or data.get("v") != STATE_VERSION:
            return cls()
        return cls(
            floor=int(data.get("floor") or 0),
            pending={str(s): _from_ranges(r) for s, r in (data.get("pending") or {}).items()},
            emitted={str(s): _from_ranges(r) for s, r in (data.get("emitted") or {}).items()},
            created=str(data.get("created") or ""),
            started=True,
        )
