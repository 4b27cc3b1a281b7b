"""A DAG author's pipeline: submit a simulation dataset and wait for it (the docs/testing.md example)."""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import dag

from airflow_provider_iceprod.operators.submit import IceProdSubmitDatasetOperator

CONFIG = {
    "version": 3.2,
    "tasks": [
        {"name": "generate", "trays": [{"modules": [{"src": "/usr/bin/python3", "args": "gen.py"}]}]},
        {"name": "process", "depends": ["generate"], "trays": [{"modules": [{"src": "/usr/bin/python3"}]}]},
    ],
}


@dag(schedule="@daily", start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False)
def nightly_simulation() -> None:
    IceProdSubmitDatasetOperator(
        task_id="submit",
        config=CONFIG,
        description="nightly simulation {{ ds }}",
        jobs_submitted=3,
        materialize=True,
        wait_for_completion=True,
        deferrable=False,  # wait in the worker: dag.test() runs no triggerer
        poll_interval=0.5,
        hook_params={"poll_interval": 0.1},
    )


nightly_simulation()
