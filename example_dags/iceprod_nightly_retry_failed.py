"""Every night: retry the failed tasks of some IceProd datasets, then wait for them to finish.

The datasets come from the run's ``datasets`` param (numbers or ids; set it when triggering by
hand) or, for scheduled runs, from the Airflow Variable ``iceprod_nightly_datasets`` (a JSON list,
e.g. ``[22100, 22101]``). One mapped ``retry_failed`` task per dataset resets its failed tasks
(nothing is sent when none failed); one mapped sensor per dataset then waits until it is complete,
failing when it ends in errors or stalls again.

Knobs (environment, read when the file is parsed; the defaults suit production):
``ICEPROD_EXAMPLE_POLL_INTERVAL`` (seconds between polls, 300), ``ICEPROD_EXAMPLE_DEFERRABLE``
(``true``), ``ICEPROD_EXAMPLE_WAIT_TIMEOUT`` (seconds, 20 hours: the next night takes over).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from airflow.sdk import Param, dag, task

from airflow_provider_iceprod.operators.actions import IceProdDatasetActionOperator
from airflow_provider_iceprod.sensors.dataset import IceProdDatasetSensor

POLL_INTERVAL = float(os.environ.get("ICEPROD_EXAMPLE_POLL_INTERVAL", "300"))
DEFERRABLE = os.environ.get("ICEPROD_EXAMPLE_DEFERRABLE", "true").lower() in ("1", "true", "yes")
WAIT_TIMEOUT = float(os.environ.get("ICEPROD_EXAMPLE_WAIT_TIMEOUT", str(20 * 3600)))


@dag(
    dag_id="iceprod_nightly_retry_failed",
    schedule="0 3 * * *",
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1},
    params={
        "datasets": Param(
            [],
            type="array",
            items={"type": ["integer", "string"]},
            description="dataset numbers or ids; empty: the Variable iceprod_nightly_datasets",
        )
    },
    tags=["iceprod", "example", "maintenance"],
    doc_md=__doc__,
)
def iceprod_nightly_retry_failed() -> None:
    @task
    def datasets_to_retry(params: dict | None = None) -> list:
        from airflow.sdk import Variable

        chosen = list((params or {}).get("datasets") or [])
        if not chosen:
            chosen = list(Variable.get("iceprod_nightly_datasets", default=[], deserialize_json=True))
        print(f"Retrying the failed tasks of {len(chosen)} dataset(s): {chosen}")
        return chosen

    retried = IceProdDatasetActionOperator.partial(
        task_id="retry_failed",
        action="retry_failed",
        iceprod_conn_id="iceprod_default",
        hook_params={"poll_interval": min(5.0, POLL_INTERVAL)},
    ).expand(dataset=datasets_to_retry())

    # Each retry_failed result is a dict with "dataset_id", which the sensor accepts as its dataset.
    IceProdDatasetSensor.partial(
        task_id="wait",
        iceprod_conn_id="iceprod_default",
        deferrable=DEFERRABLE,
        poke_interval=POLL_INTERVAL,
        timeout=WAIT_TIMEOUT,
    ).expand(dataset=retried.output)


iceprod_nightly_retry_failed()
