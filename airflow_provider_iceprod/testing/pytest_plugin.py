"""pytest fixtures for testing code against the local IceProd stand-in.

Enable with ``pytest_plugins = ["airflow_provider_iceprod.testing.pytest_plugin"]`` in a ``conftest.py``.

* ``iceprod_server``: a fresh :class:`~airflow_provider_iceprod.testing.LocalIceProd` per test with fast
  paces (auto-approves device codes as ``alice``).
* ``iceprod_connection``: the same server, plus ``AIRFLOW_CONN_ICEPROD_DEFAULT`` pointing at it with a
  refresh token for ``alice``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_provider_iceprod.testing.server import LocalIceProd

FAST_DEFAULTS: dict[str, Any] = {
    "grid_tick": 0.02,
    "task_duration": 0.05,
    "materialize_interval": 0.1,
    "action_delay": 0.02,
    "device_interval": 1,
}


@pytest.fixture
def iceprod_server() -> Iterator[LocalIceProd]:
    """A running stand-in with fast paces; stopped after the test."""
    from airflow_provider_iceprod.testing.server import LocalIceProd

    with LocalIceProd(auto_approve_as="alice", **FAST_DEFAULTS) as server:
        yield server


@pytest.fixture
def iceprod_connection(
    iceprod_server: LocalIceProd, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalIceProd]:
    """``iceprod_server`` plus ``AIRFLOW_CONN_ICEPROD_DEFAULT`` (JSON form) logged in as ``alice``."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_ICEPROD_DEFAULT",
        iceprod_server.airflow_connection_json(conn_id="iceprod_default", username="alice"),
    )
    yield iceprod_server
