"""IceProd's statuses, state machines and small helpers shared by the stand-in's modules."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

DATASET_STATUS: dict[str, list[str]] = {
    "processing": ["suspended", "errors", "complete"],
    "suspended": ["processing"],
    "errors": ["processing", "suspended"],
    "complete": [],
}
JOB_STATUS: dict[str, list[str]] = {
    "processing": ["suspended", "errors", "complete"],
    "suspended": ["processing"],
    "errors": ["processing"],
    "complete": [],
}
TASK_STATUS: dict[str, list[str]] = {
    "idle": ["waiting", "suspended"],
    "waiting": ["queued", "idle", "suspended"],
    "queued": ["processing", "idle", "waiting", "suspended", "failed", "complete"],
    "processing": ["idle", "waiting", "queued", "suspended", "failed", "complete"],
    "suspended": ["idle", "waiting"],
    "failed": ["idle", "waiting"],
    "complete": [],
}
ACTIVE_TASK_STATUSES = frozenset({"idle", "waiting", "queued", "processing"})
RESOURCE_DEFAULTS: dict[str, Any] = {"gpu": [], "memory": 2.0, "disk": 10.0, "time": 8.0, "cpu": 1}
GROUPS = ("admin", "simprod", "filtering", "users")


class ApiError(Exception):
    """An IceProd error answer: ``{"code": code, "error": reason}`` with ``reason`` as HTTP reason phrase."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


def prev_statuses(machine: Mapping[str, list[str]], status: str) -> list[str]:
    """Statuses from which ``status`` may be entered."""
    return [k for k, nexts in machine.items() if status in nexts]


def bulk_rule(machine: Mapping[str, list[str]], initial: str, action: str) -> tuple[str, list[str] | None]:
    """The new status of a ``bulk_suspend|bulk_reset|bulk_hard_reset`` and the statuses it applies to
    (None: every status). ``initial`` is where a reset puts a record (``processing`` jobs, ``idle`` tasks)."""
    if action == "hard_reset":
        return initial, None
    new = "suspended" if action == "suspend" else initial
    return new, prev_statuses(machine, new)


def moves(machine: Mapping[str, list[str]], current: str, new: str) -> bool:
    """Whether a status PUT moves a record from ``current`` to ``new``: True to change it, False when
    it is already there, IceProd's 400 when the state machine forbids the move."""
    if current in prev_statuses(machine, new):
        return True
    if current != new:
        raise ApiError(400, "Bad state transition for status")
    return False


def ids_by_status(
    machine: Mapping[str, list[str]], records: Mapping[str, Mapping[str, Any]]
) -> dict[str, list[str]]:
    """IceProd's ``*_summaries/status``: the record ids per status, in state-machine order."""
    out: dict[str, list[str]] = {}
    for record_id, record in records.items():
        out.setdefault(record["status"], []).append(record_id)
    return status_sorted(machine, out)


def status_sorted(machine: Mapping[str, list[str]], counts: Mapping[str, Any]) -> dict[str, Any]:
    """Order a ``{status: value}`` dict like IceProd does (state-machine order, unknown last)."""
    order = list(machine)
    return {k: counts[k] for k in sorted(counts, key=lambda s: order.index(s) if s in order else len(order))}


def found(record: dict[str, Any] | None, what: str) -> dict[str, Any]:
    """The record, or IceProd's ``404 <what> not found``."""
    if record is None:
        raise ApiError(404, f"{what} not found")
    return record


def matching(
    records: Mapping[str, dict[str, Any]], **allowed: Collection[Any]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The records whose fields hold one of the allowed values; an empty collection allows every value."""
    for record_id, record in records.items():
        if all(not values or record[name] in values for name, values in allowed.items()):
            yield record_id, record


def nowstr() -> str:
    """IceProd's timestamp format: UTC without a timezone suffix."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def new_id() -> str:
    """IceProd's ids are ``uuid1().hex``."""
    return uuid.uuid1().hex


def project(doc: Mapping[str, Any], keys: str | None, id_field: str) -> dict[str, Any]:
    """Apply IceProd's ``keys`` projection (``|``-separated, always including ``id_field``).

    Keys with a dot select a nested field (``requirements.gpu``), as MongoDB does.
    """
    public = {k: v for k, v in doc.items() if not k.startswith("_")}
    if not keys:
        return public
    wanted = [k for k in keys.split("|") if k]
    out: dict[str, Any] = {}
    for key in [*wanted, id_field]:
        head, _, rest = key.partition(".")
        if head not in public:
            continue
        if rest and isinstance(public[head], Mapping):
            inner = project(public[head], rest, "")
            if inner:
                out.setdefault(head, {}).update(inner)
        else:
            out[head] = public[head]
    return out


def split_arg(value: str | None) -> list[str]:
    """Split a ``|``-separated multi-value argument."""
    return [v for v in (value or "").split("|") if v]


def strtobool(value: Any) -> bool:
    text = str(value).strip().lower()
    if text in ("y", "yes", "t", "true", "on", "1"):
        return True
    if text in ("n", "no", "f", "false", "off", "0"):
        return False
    raise ValueError(f"invalid truth value {value!r}")
