"""IceProd's statuses, state machines and small helpers shared by the stand-in's modules."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
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


def status_sorted(machine: Mapping[str, list[str]], counts: Mapping[str, Any]) -> dict[str, Any]:
    """Order a ``{status: value}`` dict like IceProd does (state-machine order, unknown last)."""
    order = list(machine)
    return {k: counts[k] for k in sorted(counts, key=lambda s: order.index(s) if s in order else len(order))}


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
