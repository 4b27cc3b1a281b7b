"""Submit an IceProd dataset and wait until it is complete: the provider's main example.

The config is IceProd 3.2's two-task example: ``generate``, then ``process`` which depends on it.
The submit task validates the config before sending anything, submits it once (a retried or
cleared task reattaches to its dataset instead of creating a second one), pushes ``dataset_id``,
``dataset`` and ``url`` to XCom with an "IceProd dataset" link, then waits in the triggerer
(deferrable) until the dataset is complete, failing fast when it ends in errors or stalls.

Knobs (environment, read when the file is parsed; the defaults suit production):
``ICEPROD_EXAMPLE_JOBS`` (10), ``ICEPROD_EXAMPLE_POLL_INTERVAL`` (seconds between polls, 300),
``ICEPROD_EXAMPLE_DEFERRABLE`` (``true``), ``ICEPROD_EXAMPLE_WAIT_TIMEOUT`` (seconds, 2 days).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from airflow.sdk import dag, task

from airflow_provider_iceprod.operators.submit import IceProdSubmitDatasetOperator

JOBS = int(os.environ.get("ICEPROD_EXAMPLE_JOBS", "10"))
POLL_INTERVAL = float(os.environ.get("ICEPROD_EXAMPLE_POLL_INTERVAL", "300"))
DEFERRABLE = os.environ.get("ICEPROD_EXAMPLE_DEFERRABLE", "true").lower() in ("1", "true", "yes")
WAIT_TIMEOUT = float(os.environ.get("ICEPROD_EXAMPLE_WAIT_TIMEOUT", str(2 * 24 * 3600)))

TWO_TASK_CONFIG = {
    "version": 3.2,
    "description": "airflow example: generate, then process",
    "tasks": [
        {
            "name": "generate",
            "requirements": {"cpu": 1, "memory": 2.0},
            "trays": [{"modules": [{"src": "/usr/bin/python3", "args": '-c "print(1)"'}]}],
        },
        {
            "name": "process",
            "depends": ["generate"],
            "trays": [{"modules": [{"src": "/usr/bin/python3", "args": '-c "print(2)"'}]}],
        },
    ],
}


@dag(
    dag_id="iceprod_submit_and_wait",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    default_args={"retries": 2},
    tags=["iceprod", "example"],
    doc_md=__doc__,
)
def iceprod_submit_and_wait() -> None:
    submit = IceProdSubmitDatasetOperator(
        task_id="submit",
        iceprod_conn_id="iceprod_default",
        config=TWO_TASK_CONFIG,
        description="Airflow example {{ dag.dag_id }} run {{ run_id }}",
        jobs_submitted=JOBS,
        materialize=True,  # create the first jobs now instead of waiting for IceProd's cron
        wait_for_completion=True,
        deferrable=DEFERRABLE,
        poll_interval=POLL_INTERVAL,
        wait_timeout=WAIT_TIMEOUT,
        # IceProdHook arguments: retries, seconds per request, and how often /actions requests are
        # polled (IceProd finishes them in seconds)
        hook_params={"retry_limit": 5, "timeout": 30.0, "poll_interval": min(5.0, POLL_INTERVAL)},
    )

    @task
    def report(dataset_id: str, ti=None) -> dict:
        """Read the finished dataset back from IceProd and log a summary."""
        from airflow_provider_iceprod.hooks.iceprod import IceProdHook

        progress = IceProdHook("iceprod_default").dataset_progress(dataset_id)
        url = ti.xcom_pull(task_ids="submit", key="url")
        print(
            f"IceProd dataset {progress.dataset} is {progress.status}: "
            f"{progress.jobs_complete}/{progress.jobs_submitted} jobs complete, "
            f"tasks {progress.task_counts}. {url}"
        )
        return progress.as_dict()

    report(submit.output)


iceprod_submit_and_wait()
