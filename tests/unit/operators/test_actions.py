"""IceProdDatasetActionOperator against the local IceProd stand-in."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from airflow.sdk import chain
from operator_helpers import FAST_ARGS, TWO_TASKS, make_dag, run_dag, ti_states, xcoms

from airflow_provider_iceprod.assets import iceprod_asset, iceprod_asset_uri
from airflow_provider_iceprod.exceptions import IceProdConfigError, IceProdDatasetFailedError
from airflow_provider_iceprod.links import IceProdDatasetLink
from airflow_provider_iceprod.operators.actions import (
    ACTIONS,
    IceProdActionRejectedError,
    IceProdDatasetActionOperator,
    validate_action,
)
from airflow_provider_iceprod.operators.submit import IceProdSubmitDatasetOperator

ACTION_ARGS = {k: v for k, v in FAST_ARGS.items() if k != "poll_interval"}


def _action(task_id: str, action: str, dataset: Any, value: Any = None, **kwargs: Any) -> Any:
    return IceProdDatasetActionOperator(
        task_id=task_id, action=action, dataset=dataset, value=value, **ACTION_ARGS, **kwargs
    )


class RecordingTI:
    """Stands in for the task instance when an operator's execute() is called directly."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


# --------------------------------------------------------------------------- argument checks


def test_unknown_action_lists_the_valid_ones() -> None:
    with pytest.raises(IceProdConfigError) as err:
        validate_action("pause", None)
    for name in ACTIONS:
        assert name in str(err.value)
    assert err.value.field == "action"


@pytest.mark.parametrize(
    ("action", "value", "message"),
    [
        ("suspend", 1, "takes no value"),
        ("set_priority", None, "needs value"),
        ("set_priority", "high", "must be a number"),
        ("set_priority", float("nan"), "must be a number"),
        ("set_description", "", "non-empty string"),
        ("add_jobs", 0, "positive integer"),
        ("add_jobs", 2.5, "positive integer"),
        (
            "set_requirements",
            {"process": {"ram": 4}},
            r"Unknown requirement\(s\) \['ram'\] in value\['process'\]",
        ),
        ("set_requirements", {"process": {"cpu": 1.5}}, "integer"),
        ("set_requirements", {"process": {"os": "RHEL_7"}}, "list of strings"),
        ("set_requirements", {"process": {}}, "non-empty dict"),
        ("add_jobs", 10**9, "allow_large=True"),
        ("set_requirements", ["memory"], "task_name"),
    ],
)
def test_bad_values_are_rejected(action: str, value: Any, message: str) -> None:
    with pytest.raises(IceProdConfigError, match=message):
        validate_action(action, value)


def test_values_are_normalised() -> None:
    assert validate_action(" set_priority ", "0.75") == ("set_priority", 0.75)
    assert validate_action("add_jobs", "10") == ("add_jobs", 10)
    assert validate_action("set_requirements", {"p": {"memory": 4, "os": ["RHEL_9"], "site": 7}}) == (
        "set_requirements",
        {"p": {"memory": 4.0, "os": ["RHEL_9"], "site": "7"}},
    )


def test_bad_action_fails_when_the_dag_is_parsed() -> None:
    with pytest.raises(IceProdConfigError, match="retry_failed"):
        IceProdDatasetActionOperator(task_id="x", action="retry", dataset=1)
    with pytest.raises(IceProdConfigError, match="needs value"):
        IceProdDatasetActionOperator(task_id="x", action="add_jobs", dataset=1)


def test_templated_bad_value_and_bad_dataset_fail_before_any_request(iceprod_connection, airflow_db) -> None:
    ip = iceprod_connection
    with make_dag("act_bad_templates", retries=2, params={"priority": "high", "dataset": "abc"}) as dag:
        _action("bad_value", "set_priority", 1, "{{ params.priority }}")
        _action("bad_dataset", "suspend", "{{ params.dataset }}")
        _action("bad_action", "{{ 'resume_all' }}", 1)
    dag_run = run_dag(dag)

    states = ti_states(dag_run)
    assert states[("bad_value", -1)] == "failed"
    assert states[("bad_dataset", -1)] == "failed"
    assert states[("bad_action", -1)] == "failed"
    assert ip.counters.total() == 0


# ------------------------------------------------------------------------------ the actions


def test_every_action_changes_the_dataset(iceprod_connection, airflow_db) -> None:
    ip = iceprod_connection
    ip.grid.pause()  # keep the dataset processing while the actions run
    dataset_id = ip.create_dataset(TWO_TASKS, jobs_submitted=2, materialize=True)
    number = ip.dataset(dataset_id)["dataset"]
    asset = iceprod_asset(ip.api_url, number)
    with make_dag("act_all_actions", params={"conn": "iceprod_default"}) as dag:
        tasks = [
            # the hook is built after rendering, from the rendered connection id
            _action("set_priority", "set_priority", number, 0.9, iceprod_conn_id="{{ params.conn }}"),
            _action("set_description", "set_description", dataset_id, "renamed by Airflow"),
            _action("add_jobs", "add_jobs", str(number), 3),
            _action("set_requirements", "set_requirements", number, {"process": {"memory": 4.0, "cpu": 2}}),
            _action("suspend", "suspend", number),
            _action("resume", "resume", number),
            _action("resume_again", "resume", number),
            _action("hard_reset", "hard_reset", number),
            _action("truncate", "truncate", number, outlets=[asset]),
        ]
        chain(*tasks)
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "success", ti_states(dag_run)
    dataset = ip.dataset(dataset_id)
    assert dataset["priority"] == 0.9
    assert dataset["description"] == "renamed by Airflow"
    assert dataset["jobs_submitted"] == 5
    assert dataset["truncated"] is True
    assert dataset["status"] == "processing"
    process = [t for t in ip.tasks(dataset_id) if t["name"] == "process"]
    assert process and all(
        t["requirements"]["memory"] == 4.0 and t["requirements"]["cpu"] == 2 for t in process
    )

    results = {task_id: xcoms(dag_run, task_id)["return_value"] for task_id in dag.task_ids}
    assert results["suspend"]["status"] == "suspended"
    assert set(results["suspend"]["task_counts"]) == {"suspended"}
    assert results["resume"]["status"] == "processing"
    assert results["resume"]["request_id"]
    assert results["resume_again"]["changed"] is False  # already processing: nothing sent
    assert results["add_jobs"]["jobs_submitted"] == 5
    assert results["truncate"]["status_before"] == "processing"
    assert ip.counters.matching(r"^POST /actions/dataset_status$") == 3  # suspend, resume, hard_reset
    found = xcoms(dag_run, "truncate")
    assert found["dataset"] == number
    assert found[IceProdDatasetLink().xcom_key] == f"{ip.website_url}/dataset/{dataset_id}"

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        events = session.scalars(query.where(AssetModel.uri == iceprod_asset_uri(ip.api_url, number))).all()
        assert [dict(e.extra)["action"] for e in events] == ["truncate"]


def test_retry_failed_resets_failed_tasks_and_skips_when_none_failed(iceprod_connection, airflow_db) -> None:
    from operator_helpers import wait_until

    ip = iceprod_connection
    ip.grid.fail_task("generate", times=1)
    failing = ip.create_dataset(jobs_submitted=1, materialize=True)
    healthy = ip.create_dataset(jobs_submitted=1, materialize=True)
    wait_until(lambda: ip.dataset(failing)["status"] == "errors")
    with make_dag("act_retry_failed") as dag:
        _action("retry_failing", "retry_failed", failing)
        _action("retry_healthy", "retry_failed", healthy)
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "success"
    failing_result = xcoms(dag_run, "retry_failing")["return_value"]
    assert failing_result["changed"] is True
    assert failing_result["status_before"] == "errors"
    assert failing_result["status"] == "processing"
    assert failing_result["task_counts"].get("failed", 0) == 0
    assert xcoms(dag_run, "retry_healthy")["return_value"]["changed"] is False
    # a dataset in errors gets the dataset-level reset (docs/iceprod-quirks.md, 2), not a task reset
    assert ip.counters.matching(r"^POST /actions/dataset_status$") == 1
    assert ip.counters.matching(r"^POST /actions/task_status$") == 0
    wait_until(lambda: ip.dataset(failing)["status"] == "complete")


def test_dataset_from_the_submit_task_xcom(iceprod_connection, airflow_db) -> None:
    ip = iceprod_connection
    with make_dag("act_from_xcom") as dag:
        submit = IceProdSubmitDatasetOperator(
            task_id="submit", config=TWO_TASKS, description="from xcom", jobs_submitted=1, **ACTION_ARGS
        )
        prio = _action("by_output", "set_priority", submit.output, 0.3)
        desc = _action(
            "by_template",
            "set_description",
            "{{ ti.xcom_pull(task_ids='submit', key='dataset') }}",
            "{{ ti.xcom_pull(task_ids='submit', key='dataset') }} renamed",
        )
        submit >> [prio, desc]
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "success"
    [dataset] = ip.datasets()
    assert dataset["priority"] == 0.3
    assert dataset["description"] == f"{dataset['dataset']} renamed"


# ----------------------------------------------------------------------------- refusals


def _execute(op: IceProdDatasetActionOperator) -> tuple[dict, RecordingTI]:
    ti = RecordingTI()
    return op.execute({"ti": ti}), ti  # type: ignore[arg-type]


def test_resume_of_a_complete_dataset_is_refused_before_any_change(iceprod_connection) -> None:
    ip = iceprod_connection
    dataset_id = ip.create_dataset(status="complete")
    with pytest.raises(IceProdActionRejectedError, match="complete") as err:
        _execute(_action("resume", "resume", dataset_id))
    assert "resume" in str(err.value)
    assert ip.counters.matching(r"^POST /actions/") == 0
    assert ip.dataset(dataset_id)["status"] == "complete"


def test_truncate_of_a_complete_dataset_keeps_iceprods_text(iceprod_connection) -> None:
    ip = iceprod_connection
    dataset_id = ip.create_dataset(status="complete")
    with pytest.raises(IceProdActionRejectedError, match="Cannot truncate complete dataset"):
        _execute(_action("truncate", "truncate", dataset_id))


def test_growing_an_immutable_dataset_is_refused_with_iceprods_text(iceprod_connection) -> None:
    ip = iceprod_connection
    dataset_id = ip.create_dataset(jobs_submitted=2, jobs_immutable=True)
    with pytest.raises(IceProdActionRejectedError, match="immutable"):
        _execute(_action("grow", "add_jobs", dataset_id, 1))


def test_add_jobs_to_an_empty_suspended_dataset_says_it_needs_a_resume(iceprod_connection) -> None:
    """A dataset submitted with jobs_submitted=0 is suspended by IceProd's completion pass: added jobs
    are made once it is resumed (docs/iceprod-quirks.md, 10)."""
    ip = iceprod_connection
    dataset_id = ip.create_dataset(jobs_submitted=0)
    _until(lambda: ip.dataset(dataset_id)["status"] == "suspended")
    result, _ = _execute(_action("grow", "add_jobs", dataset_id, 2))
    assert result["jobs_submitted"] == 2
    assert result["message"] == (
        "added 2 job(s); jobs_submitted is now 2; "
        "the dataset is suspended: IceProd creates the jobs once it is resumed"
    )
    assert ip.store.dataset_jobs(dataset_id) == {}
    result, _ = _execute(_action("resume", "resume", dataset_id))
    assert result["status_before"] == "suspended" and result["message"] == "resumed"
    _until(lambda: ip.dataset(dataset_id)["status"] == "complete")
    assert len(ip.store.dataset_jobs(dataset_id)) == 2


def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the stand-in never got there"
        time.sleep(0.02)


def test_set_requirements_for_an_unknown_task_name_changes_nothing(iceprod_connection) -> None:
    ip = iceprod_connection
    dataset_id = ip.create_dataset(TWO_TASKS, materialize=True)
    with pytest.raises(IceProdConfigError, match="'generate', 'process'"):
        _execute(_action("reqs", "set_requirements", dataset_id, {"simulate": {"memory": 8.0}}))
    assert ip.counters.matching(r"bulk_requirements") == 0


def test_unknown_dataset_is_a_clear_error(iceprod_connection) -> None:
    with pytest.raises(IceProdDatasetFailedError, match="cannot be read"):
        _execute(_action("suspend", "suspend", "f" * 32))


def test_result_and_xcoms_of_a_direct_execute(iceprod_connection) -> None:
    ip = iceprod_connection
    dataset_id = ip.create_dataset(jobs_submitted=1)
    result, ti = _execute(_action("prio", "set_priority", dataset_id, "0.25"))
    assert result["action"] == "set_priority"
    assert result["dataset_id"] == dataset_id
    assert result["message"] == "priority set to 0.25"
    assert ti.pushed["dataset_id"] == dataset_id
    assert ti.pushed["url"].endswith(f"/dataset/{dataset_id}")
    assert ip.dataset(dataset_id)["priority"] == 0.25


# ------------------------------------------------------------------ issue 13: ranges, add_jobs once


def test_large_job_counts_need_allow_large_and_negative_priorities_pass() -> None:
    """Issue 13 #9: one range check, at parse time for literal values."""
    with pytest.raises(IceProdConfigError, match="1,000,000") as err:
        IceProdDatasetActionOperator(task_id="x", action="add_jobs", dataset=1, value=10**9)
    assert err.value.field == "value"
    IceProdDatasetActionOperator(task_id="x", action="add_jobs", dataset=1, value=10**9, allow_large=True)
    assert validate_action("set_priority", -0.5) == ("set_priority", -0.5)  # IceProd accepts it


def test_negative_priority_is_set_at_execute(iceprod_connection) -> None:
    ip = iceprod_connection
    dataset_id = ip.create_dataset()
    result, _ = _execute(_action("prio", "set_priority", dataset_id, -1.5))
    assert ip.dataset(dataset_id)["priority"] == -1.5 and result["changed"]


class DictStore:
    """A task state store (Airflow 3.3+) kept in a dict, as it survives between tries."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


def test_add_jobs_retried_after_a_lost_answer_adds_once(iceprod_connection) -> None:
    """Issue 13 #3: the PUT went through but its answer was lost; the retried task sets the stored
    target instead of adding the jobs a second time."""
    ip = iceprod_connection
    dataset_id = ip.create_dataset(jobs_submitted=2)
    store = DictStore()
    op = _action("grow", "add_jobs", dataset_id, 3)
    ip.faults.add(r"^PUT /datasets/[0-9a-f]+/jobs_submitted$", status=500, when="after", times=1)
    with pytest.raises(Exception, match="500"):
        op.execute({"ti": RecordingTI(), "task_state_store": store})  # type: ignore[arg-type]
    assert ip.dataset(dataset_id)["jobs_submitted"] == 5  # IceProd did it; the answer was lost
    retry = _action("grow", "add_jobs", dataset_id, 3)
    result = retry.execute({"ti": RecordingTI(), "task_state_store": store})  # type: ignore[arg-type]
    assert result["jobs_submitted"] == 5
    assert ip.dataset(dataset_id)["jobs_submitted"] == 5
    assert store.data == {}  # done: a clear adds again, on purpose
