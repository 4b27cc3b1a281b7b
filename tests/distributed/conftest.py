"""Fixtures of the distributed tier: one stand-in IceProd and one distributed Airflow per module.

The tier runs only when ``ICEPROD_DISTRIBUTED`` is ``ci`` (the reduced set that ``make test`` runs) or
``full`` (``make test-distributed``); otherwise its tests are skipped with the reason. With
``ICEPROD_DISTRIBUTED_WRITE=<file>`` the figures of the run are written into that Markdown file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from airflow_processes import login_args
from distributed_cluster import (
    POLL_INTERVAL,
    SCALE,
    SIZES,
    TOKEN_LIFETIME,
    DistributedAirflow,
    distributed_airflow,
)

DAG_IDS = ("dist_submit_wait", "dist_submit_hold", "dist_token_load")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SCALE in SIZES:
        return
    skip = pytest.mark.skip(
        reason="distributed tier: set ICEPROD_DISTRIBUTED=ci|full (make test-distributed)"
    )
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@dataclass
class Results:
    """Figures of this run, one section per scenario; written to docs by the session's end."""

    sections: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def add(self, scenario: str, label: str, value: Any) -> None:
        self.sections.setdefault(scenario, []).append((label, str(value)))

    def markdown(self, heading: str) -> str:
        lines = [f"### {heading}", ""]
        for scenario, rows in self.sections.items():
            lines += [f"**{scenario}**", "", "| Figure | Value |", "| --- | --- |"]
            lines += [f"| {label} | {value} |" for label, value in rows]
            lines.append("")
        return "\n".join(lines)


def _write(res: Results) -> None:
    target = os.environ.get("ICEPROD_DISTRIBUTED_WRITE")
    if not target or not res.sections:
        return
    key = f"{SCALE}-airflow-{version('apache-airflow-core')}"
    heading = f"Last run: {SCALE} set, Airflow {version('apache-airflow-core')}, Celery provider " + version(
        "apache-airflow-providers-celery"
    )
    block = f"<!-- results:{key} -->\n{res.markdown(heading)}\n<!-- /results:{key} -->"
    path = Path(target)
    text = path.read_text() if path.exists() else ""
    pattern = re.compile(rf"<!-- results:{re.escape(key)} -->.*?<!-- /results:{re.escape(key)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


@pytest.fixture(scope="session")
def _session_results() -> Iterator[Results]:
    res = Results()
    yield res
    _write(res)


@pytest.fixture
def results(_session_results: Results) -> Iterator[Results]:
    """Figures of the run; written after every scenario, so a later failure keeps the earlier ones."""
    yield _session_results
    _write(_session_results)


@pytest.fixture(scope="module")
def sizes() -> dict[str, int]:
    return SIZES[SCALE]


@pytest.fixture(scope="module")
def iceprod() -> Iterator[Any]:
    from airflow_provider_iceprod.testing import LocalIceProd

    with LocalIceProd(
        auto_approve_as="alice",
        rotate_refresh_tokens=True,  # single-use refresh tokens, as IceCube's Keycloak issues them
        token_lifetime=TOKEN_LIFETIME,
        task_duration=1.0,
        materialize_interval=0.5,
    ) as ip:
        yield ip


def login(cluster: DistributedAirflow, ip: Any) -> None:
    """``airflow-iceprod login`` (device flow, auto-approved) writes the connection into Postgres."""
    proc = subprocess.run(
        login_args(ip),
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr


class Api:
    """The api-server's public REST API (SimpleAuthManager with all users admin)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{self.base}/auth/token", timeout=30) as resp:
            self.token = json.loads(resp.read())["access_token"]

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any] | None = None) -> None:
        body = json.dumps({"dag_run_id": run_id, "logical_date": None, "conf": conf or {}}).encode()
        req = urllib.request.Request(
            f"{self.base}/api/v2/dags/{dag_id}/dagRuns",
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status in (200, 201), resp.read()


@pytest.fixture(scope="module")
def cluster(iceprod: Any) -> Iterator[DistributedAirflow]:
    # Not under pytest's basetemp: any other pytest session of this user (a mutation run starts
    # hundreds) prunes old basetemps, and Postgres shuts down at once when its data directory's lock
    # file disappears ("the database system is shutting down" in the middle of a scenario).
    with (
        tempfile.TemporaryDirectory(prefix="iceprod-distributed-") as tmp,
        distributed_airflow(Path(tmp), extra_env={"ICEPROD_DIST_POLL_INTERVAL": str(POLL_INTERVAL)}) as c,
    ):
        login(c, iceprod)
        c.wait_dag_parsed(DAG_IDS)
        c.api = Api(c.api_port)
        yield c
