"""A production-like Airflow on loopback: api-server + triggerer as separate processes.

Tasks run through the LocalExecutor in their own processes, talk to the api-server's Execution API
and cannot touch the ORM; deferred tasks run in the real triggerer. This catches what in-process
``dag.test()`` hides (ORM writes from tasks, sync I/O on the triggerer's event loop, unmasked secrets).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from airflow_processes import BIN, free_port, start_api_server, start_service, stop_group, wait_api_server

#: Seconds ``dag.test`` may take to shut its executor down once the run has a final state.
SHUTDOWN_GRACE = 60.0


def _newest_run(env: dict[str, str], dag_id: str) -> tuple[int, str | None]:
    """Id and state of the newest run of ``dag_id`` in the metadata DB ((0, None) if none)."""
    path = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].removeprefix("sqlite:///")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            row = db.execute(
                "SELECT id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (dag_id,)
            ).fetchone()
    except sqlite3.Error:
        return 0, None
    return (int(row[0]), row[1]) if row else (0, None)


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:]


@dataclass
class AirflowCluster:
    env: dict[str, str]
    api_url: str
    log_dir: Path

    def run_dag(self, dag_id: str, *, timeout: float = 600.0, extra_env: dict[str, str] | None = None) -> str:
        """Run one DAG with ``dag.test(use_executor=True)`` in a fresh process; return the run state.

        Under load, Airflow's ``LocalExecutor.end()`` (called by ``dag.test`` after the run) was seen to
        wait forever for one idle worker that never got its stop message. The run itself had ended, so
        once the metadata DB has held a final state for ``SHUTDOWN_GRACE`` seconds, the driver is
        stopped and that state returned (said in the driver log); a run that never ends still fails.
        """
        script = (
            "import sys\n"
            "from airflow.dag_processing.dagbag import DagBag\n"
            "bag = DagBag(sys.argv[1])\n"
            "assert not bag.import_errors, bag.import_errors\n"
            "run = bag.get_dag(sys.argv[2]).test(use_executor=True)\n"
            "print('DAG_RUN_STATE=' + str(run.state), flush=True)\n"
        )
        env = {**self.env, **(extra_env or {})}
        log_path = self.log_dir / f"{dag_id}.driver.log"
        before, _ = _newest_run(env, dag_id)  # an earlier run of the same DAG does not count
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", script, env["AIRFLOW__CORE__DAGS_FOLDER"], dag_id],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
            deadline = time.monotonic() + timeout
            ended_at: float | None = None
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    stop_group(proc)
                    raise AssertionError(f"dag.test did not finish in {timeout:.0f} s:\n{_tail(log_path)}")
                run_id, state = _newest_run(env, dag_id)
                final = state if run_id > before and state in ("success", "failed") else None
                ended_at = (ended_at or time.monotonic()) if final else None
                if final and ended_at is not None and time.monotonic() - ended_at > SHUTDOWN_GRACE:
                    stop_group(proc)
                    log.write(f"\n[test] run ended {final}; stopped dag.test stuck in LocalExecutor.end()\n")
                    return final
                time.sleep(1.0)
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("DAG_RUN_STATE="):
                return line.split("=", 1)[1]
        raise AssertionError(f"dag.test did not finish (exit {proc.returncode}):\n{_tail(log_path)}")

    def task_logs(self) -> str:
        base = Path(self.env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"])
        return "\n".join(p.read_text(errors="replace") for p in sorted(base.rglob("*.log")))

    def service_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))


@pytest.fixture(scope="module")
def airflow_cluster(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowCluster]:
    port = free_port()
    log_dir = tmp_path_factory.mktemp("cluster-logs")
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": "production-like-test-jwt-secret-0123456789",
        "AIRFLOW__TRIGGERER__CAPACITY": "100",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(log_dir / "task-logs"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        api = start_api_server(port, env, log_dir / "api-server.log")
        procs.append(api)
        procs.append(start_service(["triggerer", "--skip-serve-logs"], env, log_dir / "triggerer.log"))
        wait_api_server(port, api)
        yield AirflowCluster(env=env, api_url=f"http://127.0.0.1:{port}", log_dir=log_dir)
    finally:
        for proc in procs:
            stop_group(proc)
