"""Use ``docs_example/dags`` as the DAGs folder for these tests (as an author's conftest does).

An author's conftest sets ``AIRFLOW__CORE__DAGS_FOLDER`` before anything imports Airflow. Inside this
project's suite Airflow is already imported by then and has read its DAG bundles, so the folder is
also declared as a DAG bundle, which ``dag.test()`` reads each time.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DAGS = Path(__file__).parent / "dags"


@pytest.fixture(autouse=True)
def _dags_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS))
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    bundles = [
        {"name": "dags-folder", "classpath": local, "kwargs": {}},
        {"name": "docs-example", "classpath": local, "kwargs": {"path": str(DAGS), "refresh_interval": 0}},
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    monkeypatch.syspath_prepend(str(DAGS))
