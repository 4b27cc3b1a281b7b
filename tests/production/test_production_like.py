"""The main job in a production-like Airflow: separate api-server, LocalExecutor task processes and a
real triggerer, with the connection written into the metadata DB by the login CLI.

Here tasks cannot write the ORM (Airflow 3 blocks it), triggers run on the triggerer's event loop,
and task logs are written by the real supervisor, so this proves what ``dag.test()`` alone cannot:
token refresh and rotation work without ORM access, the trigger needs no sync I/O, and no token
reaches a log file.
"""

from __future__ import annotations

import subprocess

import pytest
from airflow_processes import login_args

from airflow_provider_iceprod.testing import LocalIceProd

pytestmark = [pytest.mark.production, pytest.mark.timeout(420)]


def _login_into_metadata_db(ip: LocalIceProd, env: dict[str, str]) -> None:
    proc = subprocess.run(
        login_args(ip),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def test_submit_and_wait_runs_in_production_like_airflow(airflow_cluster) -> None:
    with LocalIceProd(
        auto_approve_as="alice",
        rotate_refresh_tokens=True,
        token_lifetime=150,
        task_duration=3.0,  # long enough that the operator must defer to the triggerer
        materialize_interval=0.5,
    ) as ip:
        env = {k: v for k, v in airflow_cluster.env.items() if not k.startswith("AIRFLOW_CONN_")}
        _login_into_metadata_db(ip, env)
        assert ip.counters.grants["device_code"] == 1

        state = airflow_cluster.run_dag(
            "iceprod_submit_and_wait",
            extra_env={"ICEPROD_EXAMPLE_POLL_INTERVAL": "1", "ICEPROD_EXAMPLE_JOBS": "2"},
        )
        logs = airflow_cluster.task_logs()
        assert state == "success", logs[-6000:] + airflow_cluster.service_logs()[-6000:]

        datasets = ip.datasets()
        assert len(datasets) == 1
        assert datasets[0]["status"] == "complete"

        # The task processes refreshed with the single-use refresh token from the DB connection and
        # persisted the rotated one without ORM access (tasks would have failed otherwise).
        assert ip.counters.grants["refresh_token"] >= 1

        # The wait really ran in the triggerer process (its lines land in the submit task's log).
        fired = [
            line
            for line in logs.splitlines()
            if "Trigger fired event" in line and "iceprod_submit_and_wait/" in line
        ]
        assert len(fired) == 1, logs[-6000:]
        assert "'status': 'success'" in fired[0]
        assert datasets[0]["dataset_id"] in fired[0]

        # No token the identity provider ever issued appears in a task log or service log.
        everything = logs + airflow_cluster.service_logs()
        issued = ip.issued_tokens()
        assert issued, "the stand-in should have issued tokens"
        leaked = [tok[:12] for tok in issued if tok in everything]
        assert not leaked, f"tokens leaked into logs: {leaked}"
