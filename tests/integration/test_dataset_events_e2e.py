"""End to end: datasets submitted straight to IceProd start the example DAG, through a real triggerer.

A fresh Airflow (own AIRFLOW_HOME and SQLite DB) runs the api-server, the scheduler (LocalExecutor)
and the triggerer as separate processes, with one DAG bundle holding only
``example_dags/iceprod_dataset_events.py``. Datasets are created in the stand-in directly, as
IceProd's website or scripts would. Checked: a matching dataset starts exactly one run whose first
task read the event; datasets that do not match start none; a triggerer restart repeats nothing and
loses nothing (a dataset that finishes while it is down still starts its run); the watcher's
high-water mark lives in Airflow's asset state store.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow_processes import (
    BIN,
    free_port,
    run_checked,
    start_api_server,
    start_service,
    stop_group,
    wait_api_server,
)

from airflow_provider_iceprod.testing import LocalIceProd

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "iceprod_dataset_events.py"
DAG_ID = "iceprod_dataset_events"
TRAYS = [{"modules": [{"src": "/usr/bin/true"}]}]
ONE_TASK = {"version": 3.2, "tasks": [{"name": "generate", "trays": TRAYS}]}

pytestmark = [pytest.mark.production, pytest.mark.timeout(600)]


def _until(predicate: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout} s\n{logs()[-6000:]}")


class Cluster:
    """api-server + scheduler + triggerer on loopback, over a fresh SQLite metadata DB."""

    def __init__(self, home: Path, ip: LocalIceProd) -> None:
        self.home = home
        self.db = home / "airflow.db"
        dags = home / "dags"
        dags.mkdir()
        (dags / EXAMPLE.name).symlink_to(EXAMPLE)
        self.port = free_port()
        bundle = {"name": "events-e2e", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle"}
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
                [{**bundle, "kwargs": {"path": str(dags), "refresh_interval": 0}}]
            ),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "2",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.port}/execution/",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": "dataset-events-e2e-jwt-secret-0123456789",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW_CONN_ICEPROD_DEFAULT": ip.airflow_connection_json(
                conn_id="iceprod_default", username="alice"
            ),
            "ICEPROD_EXAMPLE_EVENTS_GROUP": "simprod",
            "ICEPROD_EXAMPLE_EVENTS_DESCRIPTION": "IceCube-2026*",
            "ICEPROD_EXAMPLE_EVENTS_POLL_INTERVAL": "1",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts = 0

    def cli(self, *args: str) -> None:
        run_checked([str(BIN / "airflow"), *args], self.env, timeout=240)

    def _log(self, name: str) -> Path:
        self.starts += 1
        return self.home / f"{name}.{self.starts}.log"

    def start(self, name: str) -> None:
        """The scheduler or the triggerer (the api-server: :meth:`start_api_server`)."""
        self.procs[name] = start_service([name, "--skip-serve-logs"], self.env, self._log(name))

    def start_api_server(self) -> None:
        self.procs["api-server"] = start_api_server(self.port, self.env, self._log("api-server"))

    def wait_api_server(self) -> None:
        try:
            wait_api_server(self.port, self.procs["api-server"], timeout=180)
        except RuntimeError as exc:
            raise AssertionError(f"{exc}\n{self.logs()[-6000:]}") from None

    def stop(self, name: str) -> None:
        stop_group(self.procs.pop(name))

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db, timeout=30) as db:
            return db.execute(sql, params).fetchall()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.home.glob("*.log")))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Cluster, LocalIceProd]]:
    with LocalIceProd(
        auto_approve_as="alice", grid_tick=0.05, task_duration=2.0, materialize_interval=0.2
    ) as ip:
        c = Cluster(tmp_path, ip)
        try:
            c.cli("db", "migrate")
            c.cli("dags", "reserialize")  # registers the DAG, its asset and the watcher's trigger
            c.start_api_server()
            c.start("scheduler")
            c.start("triggerer")
            c.wait_api_server()
            yield c, ip
        finally:
            for name in list(c.procs):
                c.stop(name)


def test_datasets_from_outside_airflow_start_the_example_dag_once(cluster) -> None:
    c, ip = cluster

    def runs() -> list[tuple[str, str]]:
        return c.query("SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id", DAG_ID)

    def first_task_output() -> list[str]:
        rows = c.query(
            "SELECT value FROM xcom WHERE dag_id = ? AND task_id = 'finished_datasets' AND key = 'return_value'",
            DAG_ID,
        )
        return [d["dataset_id"] for (value,) in rows for d in json.loads(value)]

    def watermark() -> dict[str, Any] | None:
        rows = c.query("SELECT value FROM asset_state_store WHERE key LIKE 'iceprod_watch_%'")
        return json.loads(rows[0][0]) if rows else None

    # the watcher started and stored its high-water mark in the asset state store
    _until(watermark, 180, "the watcher's first start", c.logs)

    first = ip.create_dataset(ONE_TASK, group="simprod", description="IceCube-2026 muons", materialize=True)
    ip.create_dataset(ONE_TASK, group="users", description="IceCube-2026 other group", materialize=True)
    ip.create_dataset(ONE_TASK, group="simprod", description="Level2 2026", materialize=True)
    _until(lambda: first_task_output() == [first], 240, "the run for the first dataset", c.logs)
    _until(lambda: [s for _, s in runs()] == ["success"], 120, "the run to succeed", c.logs)

    # restart the triggerer; a matching dataset is born and finishes while it is down
    c.stop("triggerer")
    second = ip.create_dataset(
        ONE_TASK, group="simprod", description="IceCube-2026 cascades", materialize=True
    )
    _until(lambda: ip.dataset(second)["status"] == "complete", 60, "the second dataset to finish", c.logs)
    c.start("triggerer")
    _until(lambda: sorted(first_task_output()) == sorted([first, second]), 240, "the second run", c.logs)
    _until(lambda: [s for _, s in runs()] == ["success", "success"], 120, "both runs to succeed", c.logs)

    # a while later: still one run per matching dataset, no repeat after the restart
    time.sleep(8)
    assert len(runs()) == 2
    assert sorted(first_task_output()) == sorted([first, second])
    events = c.query("SELECT extra FROM asset_event")
    assert sorted(json.loads(e)["payload"]["dataset_id"] for (e,) in events) == sorted([first, second])
    mark = watermark()
    assert mark is not None
    assert sorted(n for r in mark["emitted"]["complete"] for n in range(r[0], r[1] + 1)) == sorted(
        ip.dataset(d)["dataset"] for d in (first, second)
    )
    everything = c.logs() + "".join(p.read_text(errors="replace") for p in (c.home / "logs").rglob("*.log"))
    assert all(token not in everything for token in ip.issued_tokens())  # no token in any log
