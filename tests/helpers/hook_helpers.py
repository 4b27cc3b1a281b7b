"""Shared constants and helpers of the hook tests (on sys.path through pytest's `pythonpath`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_iceprod.testing.server import LocalIceProd

FAST = {"retry_limit": 3, "retry_delay": 0.01, "timeout": 2.0, "poll_interval": 0.05}
CONFIG: dict[str, Any] = {
    "version": 3.2,
    "tasks": [
        {"name": "generate", "trays": [{"modules": [{"src": "/usr/bin/python3", "args": "-c 'print(1)'"}]}]},
        {"name": "process", "depends": ["generate"], "trays": [{"modules": [{"src": "/usr/bin/true"}]}]},
    ],
}


def api_requests(ip: LocalIceProd) -> dict[str, int]:
    """Requests per IceProd route, identity-provider routes left out."""
    routes = ip.counters.snapshot()["routes"]
    return {route: n for route, n in routes.items() if "/auth/realms/" not in route}
