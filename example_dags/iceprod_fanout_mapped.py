"""Fan out: submit several IceProd datasets in parallel with dynamic task mapping, wait for all.

Each mapped ``submit`` task gets its own config file (JSON or YAML, rendered with Jinja, relative
to this folder) and description. Every map index is its own task instance with its own retry
marker, so a retried index reattaches to its own dataset and never duplicates a sibling's. The
``summary`` task collects the dataset ids the mapped tasks returned.

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

SUBMISSIONS = [
    {"config": "configs/muon_simulation.json", "description": "muon simulation {{ ds }}"},
    {"config": "configs/neutrino_simulation.yaml", "description": "neutrino simulation {{ ds }}"},
    {"config": "configs/filter_level2.yaml", "description": "level2 filtering {{ ds }}"},
]


@dag(
    dag_id="iceprod_fanout_mapped",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    default_args={"retries": 2},
    tags=["iceprod", "example"],
    doc_md=__doc__,
)
def iceprod_fanout_mapped() -> None:
    submit = IceProdSubmitDatasetOperator.partial(
        task_id="submit",
        iceprod_conn_id="iceprod_default",
        jobs_submitted=JOBS,
        group="users",
        materialize=True,
        wait_for_completion=True,
        deferrable=DEFERRABLE,
        poll_interval=POLL_INTERVAL,
        wait_timeout=WAIT_TIMEOUT,
        hook_params={"poll_interval": min(5.0, POLL_INTERVAL)},
        map_index_template="{{ task.description }}",
    ).expand_kwargs(SUBMISSIONS)

    @task
    def summary(dataset_ids: list[str]) -> list[str]:
        ids = list(dataset_ids)
        print(f"{len(ids)} IceProd datasets complete: {ids}")
        return ids

    summary(submit.output)


iceprod_fanout_mapped()
