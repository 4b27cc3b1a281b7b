"""Airflow's web UI in a real headless Chromium, with the IceProd stand-in behind it.

One api-server for the whole module (simple auth manager, everyone admin, connection test enabled),
a connection written by the real ``airflow-iceprod login`` into the metadata DB, and one finished run
of the main example DAG, so the task page has its "IceProd dataset" link.

Chromium is Debian's ``chromium`` package (``scripts/install_browser.sh``, run by ``make test``);
Playwright's Python package drives it through ``executable_path``, without downloading a browser.
The tests are skipped, saying why, only when no Chromium can be found.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from airflow_processes import (
    BIN,
    free_port,
    login_args,
    run_checked,
    start_api_server,
    stop_group,
    wait_api_server,
)

from airflow_provider_iceprod.testing import LocalIceProd

CONN_ID = "iceprod_default"
DAG_ID = "iceprod_submit_and_wait"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def chromium_path() -> str | None:
    """Chromium from ``$ICEPROD_CHROMIUM`` or the PATH (Debian installs ``/usr/bin/chromium``)."""
    explicit = os.environ.get("ICEPROD_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


_RUN_DAG = """
import sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(sys.argv[1])
assert not bag.import_errors, bag.import_errors
run = bag.get_dag(sys.argv[2]).test()
print("DAG_RUN=" + str(run.state) + " " + run.run_id)
"""


@dataclass
class AirflowUI:
    url: str
    iceprod: LocalIceProd
    run_id: str
    dataset_url: str
    chromium: str
    log: Path

    def server_log(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


@pytest.fixture(scope="module")
def airflow_ui(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowUI]:
    chromium = chromium_path()
    if chromium is None:
        pytest.skip(
            "No Chromium found (looked for $ICEPROD_CHROMIUM and "
            + ", ".join(CHROMIUM_CANDIDATES)
            + "). `make test` installs Debian's `chromium` package via scripts/install_browser.sh; "
            "where apt-get cannot, set ICEPROD_CHROMIUM to a Chromium binary."
        )
    port = free_port()
    log_dir = tmp_path_factory.mktemp("browser-logs")
    env = {
        k: v
        for k, v in {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": "browser-test-jwt-secret-0123456789abcdef",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "ICEPROD_EXAMPLE_POLL_INTERVAL": "1",
            "ICEPROD_EXAMPLE_JOBS": "1",
        }.items()
        if not k.startswith("AIRFLOW_CONN_")
    }
    with LocalIceProd(auto_approve_as="alice", task_duration=0.2, materialize_interval=0.2) as ip:
        run_checked(login_args(ip, CONN_ID), env)
        out = run_checked(
            [sys.executable, "-c", _RUN_DAG, env["AIRFLOW__CORE__DAGS_FOLDER"], DAG_ID], env, 240
        )
        line = next(ln for ln in out.splitlines() if ln.startswith("DAG_RUN="))
        state, run_id = line.removeprefix("DAG_RUN=").split(" ", 1)
        assert state == "success", out[-4000:]
        [dataset] = ip.datasets()
        log_path = log_dir / "api-server.log"
        api = start_api_server(port, env, log_path)
        try:
            wait_api_server(port, api)
            yield AirflowUI(
                url=f"http://127.0.0.1:{port}",
                iceprod=ip,
                run_id=run_id,
                dataset_url=f"{ip.website_url}/dataset/{dataset['dataset_id']}",
                chromium=chromium,
                log=log_path,
            )
        finally:
            stop_group(api)


@pytest.fixture(scope="module")
def browser(airflow_ui: AirflowUI) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chrome = pw.chromium.launch(
            executable_path=airflow_ui.chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield chrome
        finally:
            chrome.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture(scope="session")
def screenshot_dir() -> Path | None:
    """Where the tests save screenshots: ``$ICEPROD_SCREENSHOTS`` (``make screenshots``), else nowhere."""
    target = os.environ.get("ICEPROD_SCREENSHOTS")
    if not target:
        return None
    path = Path(target)
    path.mkdir(parents=True, exist_ok=True)
    return path
