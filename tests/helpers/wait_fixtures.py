"""Fixtures for waits (sensor, trigger, poller, wait DAGs): dataset factories and dag.test() wiring.

Imported by the ``conftest.py`` of the folders that use them."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from wait_helpers import DAGS, ONE_TASK, TWO_TASKS


@pytest.fixture
def ip(iceprod_connection: Any) -> Any:
    """The stand-in with ``AIRFLOW_CONN_ICEPROD_DEFAULT`` set (alice)."""
    return iceprod_connection


@pytest.fixture
def slow(ip: Any) -> Callable[..., str]:
    """A dataset that stays ``processing`` for the test (tasks take 60 s)."""

    def make(config: dict[str, Any] = ONE_TASK, jobs: int = 2, **fields: Any) -> str:
        ip.grid.task_duration = 60.0
        return ip.create_dataset(config, jobs_submitted=jobs, materialize=True, **fields)

    return make


@pytest.fixture
def stalled(ip: Any) -> Callable[..., str]:
    """A dataset whose first task fails, leaving its dependant idle forever (IceProd's stall)."""

    def make(jobs: int = 1) -> str:
        ip.grid.fail_task("generate")
        return ip.create_dataset(TWO_TASKS, jobs_submitted=jobs, materialize=True)

    return make


@pytest.fixture
def wait_dags(airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ModuleType]]:
    """Load ``dags/iceprod_wait_modes.py`` with parameters, as a second DAG bundle for ``dag.test()``.

    ``dag.test()`` needs the DAG file inside a configured bundle; this adds one for ``dags/`` next
    to the project's ``dags-folder`` bundle, only for the test.
    """
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    bundles = [
        {"name": "dags-folder", "classpath": local, "kwargs": {}},
        {
            "name": "iceprod-wait-tests",
            "classpath": local,
            "kwargs": {"path": str(DAGS), "refresh_interval": 0},
        },
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))

    def load(**env: Any) -> ModuleType:
        for key, value in env.items():
            monkeypatch.setenv(f"ICEPROD_TEST_{key.upper()}", str(value))
        path = DAGS / "iceprod_wait_modes.py"
        spec = importlib.util.spec_from_file_location("iceprod_wait_modes_under_test", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    yield load
