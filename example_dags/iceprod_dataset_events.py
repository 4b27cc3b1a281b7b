"""Start a DAG when IceProd datasets finish, wherever they were submitted.

``FINISHED`` is an Asset with an ``AssetWatcher``: the triggerer watches IceProd (one shared list
request per poll interval, however many such watchers) and emits an asset event for every
dataset of the group whose description matches the pattern and that becomes ``complete``. The
DAG is scheduled on it, so each event starts a run. The first task reads the triggering events
(the watcher's payload: ``dataset_id``, ``dataset``, ``description``, ``status``, ``group``,
``owner``, ``job_counts``, ``task_counts``); the second works on them.

Airflow may fold events that arrive within one scheduler loop into a single run, so the first
task returns a list.

Knobs (environment, read when the file is parsed; the defaults suit production):
``ICEPROD_EXAMPLE_EVENTS_GROUP`` (``simprod``), ``ICEPROD_EXAMPLE_EVENTS_DESCRIPTION``
(``IceCube-2026*``), ``ICEPROD_EXAMPLE_EVENTS_POLL_INTERVAL`` (seconds, 60).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import dag, task

from airflow_provider_iceprod.assets import iceprod_dataset_asset

GROUP = os.environ.get("ICEPROD_EXAMPLE_EVENTS_GROUP", "simprod")
DESCRIPTION = os.environ.get("ICEPROD_EXAMPLE_EVENTS_DESCRIPTION", "IceCube-2026*")
POLL_INTERVAL = float(os.environ.get("ICEPROD_EXAMPLE_EVENTS_POLL_INTERVAL", "60"))

FINISHED = iceprod_dataset_asset(
    "iceprod_default", group=GROUP, status="complete", description=DESCRIPTION, poll_interval=POLL_INTERVAL
)


@dag(
    dag_id="iceprod_dataset_events",
    schedule=[FINISHED],
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["iceprod", "example", "assets", "events"],
    doc_md=__doc__,
)
def iceprod_dataset_events() -> None:
    @task
    def finished_datasets(*, triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        """The datasets whose completion started this run (one per asset event)."""
        payloads = [event.extra["payload"] for event in triggering_asset_events[FINISHED]]
        for p in payloads:
            print(f"IceProd dataset {p['dataset']} ({p['dataset_id']}) is {p['status']}: {p['description']}")
        return payloads

    @task
    def summarise(datasets: list[dict[str, Any]]) -> list[str]:
        """One line per dataset: what downstream processing would start from."""
        lines = []
        for d in datasets:
            tasks = d.get("task_counts") or {}
            lines.append(
                f"{d['dataset']}: {tasks.get('complete', 0)} of {d.get('tasks_submitted')} tasks complete"
            )
        print("\n".join(lines))
        return lines

    summarise(finished_datasets())


iceprod_dataset_events()
