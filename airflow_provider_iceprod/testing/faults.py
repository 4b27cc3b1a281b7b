"""Fault injection and request counters for the stand-in. Both are thread-safe."""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, TypedDict, Unpack

DEFAULT_REASONS = {
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "server overloaded",
    504: "Gateway Timeout",
}


class FaultOptions(TypedDict, total=False):
    """The keywords of :meth:`Faults.add` (the fields of :class:`Fault` but its pattern)."""

    status: int | None
    error: str | None
    retry_after: float | None
    latency: float
    drop: bool
    times: int | None
    when: Literal["before", "after"]


@dataclass
class Fault:
    """One injected fault. See :meth:`Faults.add`."""

    pattern: re.Pattern[str]
    status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    latency: float = 0.0
    drop: bool = False
    times: int | None = None
    when: Literal["before", "after"] = "before"
    hits: int = 0

    def __post_init__(self) -> None:
        if self.when not in ("before", "after"):
            raise ValueError("when must be 'before' or 'after'")
        if self.status is None and not self.drop and not self.latency:
            raise ValueError("a fault needs status, drop or latency")

    @property
    def reason(self) -> str:
        if self.error:
            return self.error
        return DEFAULT_REASONS.get(self.status or 500, "injected fault")

    def matches(self, method: str, path: str, route: str) -> bool:
        return bool(
            self.pattern.search(f"{method} {path}")
            or self.pattern.search(f"{method} {route}")
            or self.pattern.search(path)
        )


class Faults:
    """Faults per route pattern, applied to requests in the order they were added."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, pattern: str, **options: Unpack[FaultOptions]) -> Fault:
        """Inject a fault into requests matching ``pattern``.

        ``pattern`` is a regular expression searched in ``"METHOD /path"``, in ``"METHOD /templated/route"``
        (e.g. ``GET /datasets/{dataset_id}``) and in the bare path.

        Args:
            status: answer with this status (e.g. 500, 502, 503, 429) and an IceProd-style JSON error body.
            error: the error text (default: a standard reason, ``server overloaded`` for 503).
            retry_after: send ``Retry-After: <seconds>`` with the error.
            latency: sleep this many seconds first (alone: a slow but otherwise normal answer).
            drop: close the connection without any answer.
            times: apply to this many matching requests, then stop (``None``: forever).
            when: ``"before"`` the handler runs (the request has no effect) or ``"after"`` it ran and
                changed state (the answer is lost or replaced: e.g. a submit whose 201 never arrives).
        """
        fault = Fault(re.compile(pattern), **options)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str, route: str) -> Fault | None:
        """The first active fault matching this request, consuming one of its ``times``."""
        with self._lock:
            for fault in self._faults:
                if fault.times is not None and fault.times <= 0:
                    continue
                if fault.matches(method, path, route):
                    fault.hits += 1
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def __len__(self) -> int:
        with self._lock:
            return sum(1 for f in self._faults if f.times is None or f.times > 0)


@dataclass
class Counters:
    """Requests per templated route (``"GET /datasets/{dataset_id}"``) and token grants per grant type.

    ``grants`` counts tokens issued (``refresh_token``, ``client_credentials``, ``device_code``);
    ``grant_requests`` counts every token-endpoint request per grant type, failed ones included.
    ``connections`` counts TCP connections the server accepted (keep-alive reuse shows as few).
    """

    routes: Counter[str] = field(default_factory=Counter)
    grants: Counter[str] = field(default_factory=Counter)
    grant_requests: Counter[str] = field(default_factory=Counter)
    connections: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def accepted(self) -> None:
        with self._lock:
            self.connections += 1

    def hit(self, route: str) -> None:
        with self._lock:
            self.routes[route] += 1

    def grant(self, grant_type: str, *, issued: bool) -> None:
        with self._lock:
            self.grant_requests[grant_type] += 1
            if issued:
                self.grants[grant_type] += 1

    def get(self, route: str) -> int:
        """Requests to one templated route, e.g. ``get("GET /datasets/{dataset_id}")``."""
        with self._lock:
            return self.routes[route]

    def matching(self, pattern: str) -> int:
        """Requests to all routes whose key matches the regular expression ``pattern``."""
        regex = re.compile(pattern)
        with self._lock:
            return sum(n for route, n in self.routes.items() if regex.search(route))

    def total(self) -> int:
        """All requests, identity-provider endpoints included."""
        with self._lock:
            return sum(self.routes.values())

    def snapshot(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {
                "routes": dict(self.routes),
                "grants": dict(self.grants),
                "grant_requests": dict(self.grant_requests),
            }

    def reset(self) -> None:
        with self._lock:
            self.routes.clear()
            self.grants.clear()
            self.grant_requests.clear()
            self.connections = 0
