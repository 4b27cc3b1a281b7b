"""Submit-operator behaviours that once survived a one-line mutation of the provider (issue 18),
and the asset event's status when the wait decides on job counts (the race behind a flaky test)."""

from __future__ import annotations

import threading

from operator_helpers import FAST_ARGS, make_dag, run_dag, try_numbers, wait_until, xcoms

from airflow_provider_iceprod.operators.submit import IceProdSubmitDatasetOperator

ONE_TASK = {
    "version": 3.2,
    "tasks": [{"name": "generate", "trays": [{"modules": [{"src": "/usr/bin/true"}]}]}],
}


def _submit(**kwargs: object) -> IceProdSubmitDatasetOperator:
    args: dict[str, object] = {
        "task_id": "submit",
        "config": ONE_TASK,
        "description": "operator mutant test",
        "jobs_submitted": 1,
        "materialize": True,
        **FAST_ARGS,
    }
    args.update(kwargs)
    return IceProdSubmitDatasetOperator(**args)  # type: ignore[arg-type]


def test_wait_timeout_ends_the_wait_and_is_not_retried(iceprod_connection, airflow_db) -> None:
    """``wait_timeout``: the task fails with AirflowSensorTimeout (never retried); the dataset runs on.

    The dataset completes after about 6 s, so an operator that ignored ``wait_timeout`` would
    succeed instead of hanging the test."""
    ip = iceprod_connection
    ip.grid.task_duration = 6.0
    with make_dag("op_submit_wait_timeout", retries=1) as dag:
        _submit(wait_for_completion=True, deferrable=False, wait_timeout=1)
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "failed"
    assert try_numbers(dag_run, "submit") == 1  # a timeout is final: retries=1 was not used
    [dataset] = ip.datasets()
    assert dataset["status"] == "processing"  # the dataset keeps running
    assert xcoms(dag_run, "submit")["dataset_id"] == dataset["dataset_id"]


def _asset_events(uri: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        return [dict(e.extra) for e in session.scalars(query.where(AssetModel.uri == uri)).all()]


def test_asset_event_reports_the_status_the_wait_decided_on(iceprod_connection, airflow_db) -> None:
    """A grid tick between the dataset read and the job-counts read of one poll: the poll sees
    ``processing`` and then every job complete, and ends the wait on the job counts. The asset event
    must say ``complete`` (what the wait decided), not the ``processing`` it read a moment before.

    Made deterministic: tasks stay put until one job-counts request of a poll has arrived (held 5 s
    by a latency fault); only then do they finish, inside that request's latency. The helper thread's
    waits are generous (a busy machine) and a failure there releases the tasks and fails the test instead of
    leaving the DAG waiting on 600 s tasks."""
    from airflow_provider_iceprod.assets import iceprod_asset_uri

    ip = iceprod_connection
    ip.grid.task_duration = 600.0
    held: list = []
    errors: list[BaseException] = []

    def provoke() -> None:
        try:
            # generous: on a busy machine the DAG run takes a while to submit and materialize
            wait_until(
                lambda: bool(ip.datasets()) and bool(ip.task_counts(ip.datasets()[0]["dataset_id"])),
                timeout=180,
            )
            fault = ip.faults.add(r"^GET /datasets/\{dataset_id\}/job_counts/status$", latency=5.0, times=1)
            held.append(fault)
            wait_until(lambda: fault.hits == 1, timeout=180)  # this poll's dataset read said "processing"
            ip.grid.task_duration = 0.0
            dataset_id = ip.datasets()[0]["dataset_id"]
            wait_until(lambda: ip.dataset(dataset_id)["status"] == "complete", timeout=4.5)
        except BaseException as exc:  # fail the test, never leave the DAG waiting on 600 s tasks
            errors.append(exc)
            ip.grid.task_duration = 0.0

    thread = threading.Thread(target=provoke, daemon=True)
    thread.start()
    with make_dag("op_submit_decided_status") as dag:
        _submit(wait_for_completion=True, deferrable=False, asset_alias="op-decided-alias")
    dag_run = run_dag(dag)
    thread.join(timeout=30)

    assert errors == []
    assert str(dag_run.state) == "success"
    assert held and held[0].hits == 1  # the race really happened
    [dataset] = ip.datasets()
    [extra] = _asset_events(iceprod_asset_uri(ip.api_url, dataset["dataset"]))
    assert extra["status"] == "complete"
    assert extra["job_counts"] == {"complete": 1}
