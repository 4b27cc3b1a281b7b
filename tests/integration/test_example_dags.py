"""Every example DAG in example_dags/ imports cleanly and runs green against the stand-in."""

from __future__ import annotations

import pytest
from operator_helpers import example_dagbag, run_dag, ti_states, wait_until, xcoms

from airflow_provider_iceprod.assets import iceprod_asset_uri
from airflow_provider_iceprod.links import IceProdDatasetLink
from airflow_provider_iceprod.operators._resume import submit_marker

OPERATOR_EXAMPLES = {
    "iceprod_submit_and_wait",
    "iceprod_nightly_retry_failed",
    "iceprod_fanout_mapped",
    "iceprod_assets_producer",
    "iceprod_assets_consumer",
}


def test_example_dags_import_without_errors(fast_examples) -> None:
    bag = example_dagbag()
    assert bag.import_errors == {}
    assert set(bag.dag_ids) >= OPERATOR_EXAMPLES


def test_example_dags_use_production_timings_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("ICEPROD_EXAMPLE_POLL_INTERVAL", "ICEPROD_EXAMPLE_JOBS", "ICEPROD_EXAMPLE_WAIT_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)
    submit = example_dagbag().dags["iceprod_submit_and_wait"].get_task("submit")
    assert submit.poll_interval == 300
    assert submit.deferrable is True
    assert submit.wait_for_completion is True
    assert submit.iceprod_conn_id == "iceprod_default"


def test_submit_and_wait_example(iceprod_connection, airflow_db, fast_examples) -> None:
    ip = iceprod_connection
    dag = example_dagbag().dags["iceprod_submit_and_wait"]
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "success", ti_states(dag_run)
    [dataset] = ip.datasets()
    assert dataset["status"] == "complete"
    assert dataset["jobs_submitted"] == 2
    marker = submit_marker(dag.dag_id, dag_run.run_id, "submit", -1)
    assert dataset["description"].endswith(f"[airflow:{marker}]")
    found = xcoms(dag_run, "submit")
    assert found["return_value"] == dataset["dataset_id"]
    assert found[IceProdDatasetLink().xcom_key] == f"{ip.website_url}/dataset/{dataset['dataset_id']}"
    report = xcoms(dag_run, "report")["return_value"]
    assert report["status"] == "complete"
    assert report["task_counts"] == {"complete": 4}


def test_fanout_mapped_example(iceprod_connection, airflow_db, fast_examples) -> None:
    ip = iceprod_connection
    dag = example_dagbag().dags["iceprod_fanout_mapped"]
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "success", ti_states(dag_run)
    datasets = ip.datasets()
    assert len(datasets) == 3
    assert {d["status"] for d in datasets} == {"complete"}
    by_kind = {d["description"].split()[0]: d for d in datasets}
    # JSON, YAML and templated YAML configs with 2, 3 and 1 tasks
    assert {kind: d["tasks_per_job"] for kind, d in by_kind.items()} == {
        "muon": 2,
        "neutrino": 3,
        "level2": 1,
    }
    markers = {submit_marker(dag.dag_id, dag_run.run_id, "submit", i) for i in range(3)}
    assert {d["description"].rsplit("[airflow:", 1)[1].rstrip("]") for d in datasets} == markers
    filtering = ip.config(by_kind["level2"]["dataset_id"])
    assert filtering is not None
    assert filtering["description"] == f"level2 filtering for {dag_run.logical_date:%Y-%m-%d}"
    ids = xcoms(dag_run, "summary")["return_value"]
    assert sorted(ids) == sorted(d["dataset_id"] for d in datasets)


def test_nightly_retry_failed_example(iceprod_connection, airflow_db, fast_examples) -> None:
    ip = iceprod_connection
    ip.grid.fail_task("generate", times=1)
    broken = ip.create_dataset(jobs_submitted=2, materialize=True)
    healthy = ip.create_dataset(jobs_submitted=1, materialize=True)
    wait_until(lambda: ip.task_counts(broken).get("failed") == 1)
    numbers = [ip.dataset(broken)["dataset"], ip.dataset(healthy)["dataset"]]

    dag = example_dagbag().dags["iceprod_nightly_retry_failed"]
    dag_run = run_dag(dag, run_conf={"datasets": numbers})

    assert str(dag_run.state) == "success", ti_states(dag_run)
    assert ip.dataset(broken)["status"] == "complete"
    assert ip.dataset(healthy)["status"] == "complete"
    assert ip.counters.matching(r"^POST /actions/task_status$") == 1  # only the broken one needed it
    states = ti_states(dag_run)
    assert [states[("retry_failed", i)] for i in (0, 1)] == ["success", "success"]
    assert [states[("wait", i)] for i in (0, 1)] == ["success", "success"]


def test_assets_examples(iceprod_connection, airflow_db, fast_examples) -> None:
    ip = iceprod_connection
    bag = example_dagbag()
    produced = run_dag(bag.dags["iceprod_assets_producer"])

    assert str(produced.state) == "success", ti_states(produced)
    [dataset] = ip.datasets()
    assert dataset["status"] == "complete"

    consumed = run_dag(bag.dags["iceprod_assets_consumer"])
    assert str(consumed.state) == "success", ti_states(consumed)
    [summary] = xcoms(consumed, "summarize")["return_value"]
    assert summary["uri"] == iceprod_asset_uri(ip.api_url, dataset["dataset"])
    assert summary["dataset_id"] == dataset["dataset_id"]
    assert summary["status"] == "complete"
