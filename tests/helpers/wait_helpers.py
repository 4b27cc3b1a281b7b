"""Constants and plain helpers shared by the sensor/trigger tests (fixtures live in wait_fixtures.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from airflow_provider_iceprod.models import DatasetProgress

DAGS = Path(__file__).resolve().parents[1] / "integration" / "dags"

TRAYS = [{"modules": [{"src": "/usr/bin/true"}]}]
ONE_TASK = {"version": 3.2, "tasks": [{"name": "generate", "trays": TRAYS}]}
TWO_TASKS = {
    "version": 3.2,
    "tasks": [
        {"name": "generate", "trays": TRAYS},
        {"name": "process", "depends": ["generate"], "trays": TRAYS},
    ],
}
NOT_A_DATASET = "ffffffffffffffffffffffffffffffff"
DS = "0123456789abcdef0123456789abcdef"


def progress(
    status="processing", jobs=None, tasks=None, *, truncated=False, jobs_submitted=4, tasks_per_job=2
) -> DatasetProgress:
    """A reading of dataset 7 (``DS``) for the pure wait tests: its status and job/task counts."""
    return DatasetProgress(
        dataset_id=DS,
        dataset=7,
        status=status,
        truncated=truncated,
        jobs_submitted=jobs_submitted,
        tasks_submitted=jobs_submitted * tasks_per_job,
        job_counts=dict(jobs or {}),
        task_counts=dict(tasks or {}),
    )


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def wait_for_status(ip: Any, dataset_id: str, status: str, timeout: float = 10.0) -> None:
    wait_until(lambda: ip.dataset(dataset_id)["status"] == status, timeout)


def hook() -> Any:
    from airflow_provider_iceprod.hooks.iceprod import IceProdHook

    return IceProdHook("iceprod_default", retry_limit=1, retry_delay=0.01, poll_interval=0.05)
