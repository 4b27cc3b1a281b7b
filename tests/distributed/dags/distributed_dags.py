"""DAGs of the distributed test tier (tests/distributed). Parsed by the tier's own dag-processor.

* ``dist_submit_wait``: submit one small dataset and wait for it in the triggerer (failover, rotation).
* ``dist_submit_hold``: submit and materialize, no wait; the tests hold IceProd's answers with the
  stand-in's fault injection and SIGKILL the Celery worker mid-submit.
* ``dist_token_load``: one task per worker queue that calls IceProd for a while, so every worker
  process keeps refreshing the shared login (rotation).
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, task

from airflow_provider_iceprod.operators.submit import IceProdSubmitDatasetOperator

POLL_INTERVAL = float(os.environ.get("ICEPROD_DIST_POLL_INTERVAL", "3"))

CONFIG = {
    "version": 3.2,
    "description": "distributed tier: one task",
    "tasks": [
        {
            "name": "generate",
            "requirements": {"cpu": 1, "memory": 1.0},
            "trays": [{"modules": [{"src": "/usr/bin/python3", "args": '-c "print(1)"'}]}],
        }
    ],
}

COMMON = {
    "schedule": None,
    "start_date": datetime(2024, 1, 1, tzinfo=UTC),
    "catchup": False,
    "max_active_runs": 1000,
    "max_active_tasks": 1000,
    "is_paused_upon_creation": False,
    "tags": ["iceprod", "test"],
}

with DAG("dist_submit_wait", default_args={"retries": 2, "retry_delay": timedelta(seconds=2)}, **COMMON):
    IceProdSubmitDatasetOperator(
        task_id="submit",
        config=CONFIG,
        description="distributed {{ dag.dag_id }} {{ run_id }}",
        jobs_submitted=1,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=POLL_INTERVAL,
        hook_params={"poll_interval": 0.5},  # IceProd /actions requests: poll every 0.5 s
    )

with DAG("dist_submit_hold", default_args={"retries": 2, "retry_delay": timedelta(seconds=2)}, **COMMON):
    IceProdSubmitDatasetOperator(
        task_id="submit",
        config=CONFIG,
        description="distributed {{ dag.dag_id }} {{ run_id }}",
        jobs_submitted=1,
        materialize=True,
        hook_params={"poll_interval": 0.5},  # IceProd /actions requests: poll every 0.5 s
    )

with DAG("dist_token_load", default_args={"retries": 0}, **COMMON):

    def _calls(params: dict | None = None, dag_run=None) -> dict:  # type: ignore[no-untyped-def]
        """Read one dataset every ``interval`` s for ``seconds`` s; any auth error fails the task."""
        from airflow_provider_iceprod.hooks.iceprod import IceProdHook

        conf = dict(dag_run.conf or {}) if dag_run is not None else {}
        seconds = float(conf.get("seconds", 60))
        interval = float(conf.get("interval", 1))
        dataset_id = str(conf["dataset_id"])
        hook = IceProdHook("iceprod_default")
        calls = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            hook.get_dataset(dataset_id)  # IceProdAuthError here = the login was lost
            calls += 1
            time.sleep(interval)
        return {"calls": calls, "pid": os.getpid()}

    task(task_id="calls_w1", queue="w1")(_calls)()
    task(task_id="calls_w2", queue="w2")(_calls)()
