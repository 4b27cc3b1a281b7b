"""Helpers for the operator tests: run DAGs with ``dag.test()`` against the stand-in, read XComs.

``dag.test()`` only runs DAGs Airflow has serialized. Example DAGs live in the dags folder; the small
DAGs the tests build in code are written to the metadata DB first by :func:`run_dag`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

EXAMPLE_DAGS = Path(__file__).resolve().parents[2] / "example_dags"

#: Timing knobs the example DAGs read from the environment (production defaults are minutes).
FAST_EXAMPLES = {
    "ICEPROD_EXAMPLE_POLL_INTERVAL": "0.2",
    "ICEPROD_EXAMPLE_JOBS": "2",
    "ICEPROD_EXAMPLE_WAIT_TIMEOUT": "120",
}

#: Operator arguments that keep test runs fast: quick polls, no backoff waits.
FAST_ARGS: dict[str, Any] = {
    "poll_interval": 0.1,
    "hook_params": {"poll_interval": 0.05, "retry_limit": 0, "retry_delay": 0.01},
}

TWO_TASKS = {
    "version": 3.2,
    "tasks": [
        {"name": "generate", "trays": [{"modules": [{"src": "/usr/bin/python3", "args": "-c 'print(1)'"}]}]},
        {
            "name": "process",
            "depends": ["generate"],
            "trays": [{"modules": [{"src": "/usr/bin/python3", "args": "-c 'print(2)'"}]}],
        },
    ],
}


def example_dagbag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(EXAMPLE_DAGS))


def _register(dag: Any) -> None:
    """Write a DAG built in a test into the metadata DB, as the DAG processor would."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    DagBundlesManager().sync_bundles_to_db()
    with create_session() as session:
        update_dag_parsing_results_in_db(
            "dags-folder",
            None,
            [LazyDeserializedDAG.from_dag(dag)],
            {},
            None,
            set(),
            session=session,
            files_parsed=set(),
        )


def run_dag(dag: Any, **kwargs: Any) -> Any:
    """``dag.test()``; DAGs defined outside the dags folder are registered first."""
    if not str(dag.fileloc).startswith(str(EXAMPLE_DAGS)):
        _register(dag)
    return dag.test(**kwargs)


def make_dag(dag_id: str, *, retries: int = 0, **kwargs: Any) -> Any:
    from airflow.sdk import DAG

    return DAG(
        dag_id,
        schedule=None,
        catchup=False,
        default_args={"retries": retries, "retry_delay": timedelta(0)},
        **kwargs,
    )


def xcoms(dag_run: Any, task_id: str, map_index: int = -1) -> dict[str, Any]:
    """All XComs of one task instance, deserialized."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(XComModel).where(
                XComModel.dag_id == dag_run.dag_id,
                XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id,
                XComModel.map_index == map_index,
            )
        ).all()
        return {row.key: XComModel.deserialize_value(row) for row in rows}


def ti_states(dag_run: Any) -> dict[tuple[str, int], str]:
    """``{(task_id, map_index): state}`` of a finished DAG run."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
            )
        ).all()
        return {(ti.task_id, ti.map_index): str(ti.state) for ti in tis}


def try_numbers(dag_run: Any, task_id: str) -> int:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        ti = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == dag_run.dag_id,
                TaskInstance.run_id == dag_run.run_id,
                TaskInstance.task_id == task_id,
            )
        ).one()
        return int(ti.try_number)


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


class TaskStateStore:
    """A task state store (``get``/``set``/``delete``, as ``context["task_state_store"]`` on Airflow
    3.3+) that fails with ``OSError`` in the calls named in ``fail`` (e.g. ``"get set"``)."""

    def __init__(self, fail: str = "") -> None:
        self.data: dict[str, Any] = {}
        self.fail = fail

    def get(self, key: str) -> Any:
        if "get" in self.fail:
            raise OSError("store down")
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        if "set" in self.fail:
            raise OSError("store down")
        self.data[key] = value

    def delete(self, key: str) -> None:
        if "delete" in self.fail:
            raise OSError("store down")
        self.data.pop(key, None)
