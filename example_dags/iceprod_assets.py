"""Airflow Assets for IceProd datasets: a producer DAG and a downstream DAG scheduled on it.

``iceprod_assets_producer`` submits a dataset and waits until it is complete. A submitted dataset
gets its number only at run time, so the submit task emits its asset event through the alias
``iceprod-simulation``: the event is for the Asset ``iceprod://<api host>/datasets/<number>`` and
carries ``dataset_id``, ``dataset``, ``url``, ``status`` and the final job and task counts.

``iceprod_assets_consumer`` is scheduled on that alias: it runs whenever a producer run completes a
dataset, reads which one from the triggering asset event, and summarises it from IceProd.

For a dataset whose number you already know, declare the Asset itself instead, e.g.
``outlets=[iceprod_asset("https://api.iceprod.icecube.aq", 22100)]`` on any task, and schedule
the consumer with ``schedule=[iceprod_asset("https://api.iceprod.icecube.aq", 22100)]``.

Knobs (environment, read when the file is parsed; the defaults suit production):
``ICEPROD_EXAMPLE_JOBS`` (10), ``ICEPROD_EXAMPLE_POLL_INTERVAL`` (seconds between polls, 300),
``ICEPROD_EXAMPLE_DEFERRABLE`` (``true``), ``ICEPROD_EXAMPLE_WAIT_TIMEOUT`` (seconds, 2 days).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from airflow.sdk import AssetAlias, dag, task

from airflow_provider_iceprod.operators.submit import IceProdSubmitDatasetOperator

JOBS = int(os.environ.get("ICEPROD_EXAMPLE_JOBS", "10"))
POLL_INTERVAL = float(os.environ.get("ICEPROD_EXAMPLE_POLL_INTERVAL", "300"))
DEFERRABLE = os.environ.get("ICEPROD_EXAMPLE_DEFERRABLE", "true").lower() in ("1", "true", "yes")
WAIT_TIMEOUT = float(os.environ.get("ICEPROD_EXAMPLE_WAIT_TIMEOUT", str(2 * 24 * 3600)))

ALIAS = "iceprod-simulation"


@dag(
    dag_id="iceprod_assets_producer",
    schedule=None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["iceprod", "example", "assets"],
    doc_md=__doc__,
)
def iceprod_assets_producer() -> None:
    IceProdSubmitDatasetOperator(
        task_id="submit",
        iceprod_conn_id="iceprod_default",
        config="configs/muon_simulation.json",
        description="asset-producing simulation {{ ds }}",
        jobs_submitted=JOBS,
        materialize=True,
        wait_for_completion=True,
        deferrable=DEFERRABLE,
        poll_interval=POLL_INTERVAL,
        wait_timeout=WAIT_TIMEOUT,
        hook_params={"poll_interval": min(5.0, POLL_INTERVAL)},
        asset_alias=ALIAS,  # emits iceprod://<api host>/datasets/<number> on success
    )


@dag(
    dag_id="iceprod_assets_consumer",
    schedule=[AssetAlias(ALIAS)],
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["iceprod", "example", "assets"],
    doc_md=__doc__,
)
def iceprod_assets_consumer() -> None:
    @task(inlets=[AssetAlias(ALIAS)])
    def summarize(triggering_asset_events=None, inlet_events=None) -> list[dict]:
        """Summarise every dataset whose completion triggered this run."""
        from airflow_provider_iceprod.hooks.iceprod import IceProdHook

        events = [event for events in (triggering_asset_events or {}).values() for event in events]
        if not events:  # a manual run: take the latest dataset the alias saw
            events = list(inlet_events[AssetAlias(ALIAS)])[-1:]
        if not events:
            raise ValueError(f"No asset event for alias {ALIAS!r} yet: run iceprod_assets_producer first.")
        hook = IceProdHook("iceprod_default")
        summaries = []
        for event in events:
            dataset_id = event.extra["dataset_id"]
            progress = hook.dataset_progress(dataset_id)
            stats = hook.task_stats(dataset_id)
            print(f"{event.asset.uri}: {progress.status}, tasks {progress.task_counts}, stats {stats}")
            summaries.append({"uri": event.asset.uri, **progress.as_dict(), "task_stats": stats})
        return summaries

    summarize()


iceprod_assets_producer()
iceprod_assets_consumer()
