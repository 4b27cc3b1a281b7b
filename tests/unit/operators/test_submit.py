"""IceProdSubmitDatasetOperator against the local IceProd stand-in, run with ``dag.test()``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from operator_helpers import FAST_ARGS, TWO_TASKS, make_dag, run_dag, ti_states, try_numbers, xcoms

from airflow_provider_iceprod.exceptions import IceProdDatasetFailedError
from airflow_provider_iceprod.links import IceProdDatasetLink
from airflow_provider_iceprod.operators._resume import submit_marker
from airflow_provider_iceprod.operators.submit import IceProdSubmitDatasetOperator
from airflow_provider_iceprod.testing import LocalIceProd
from airflow_provider_iceprod.testing.pytest_plugin import FAST_DEFAULTS

ONE_TASK = {
    "version": 3.2,
    "tasks": [{"name": "generate", "trays": [{"modules": [{"src": "/usr/bin/true"}]}]}],
}
LINK_KEY = IceProdDatasetLink().xcom_key


def _submit(**kwargs: object) -> IceProdSubmitDatasetOperator:
    args: dict[str, object] = {
        "task_id": "submit",
        "config": TWO_TASKS,
        "description": "operator test",
        "jobs_submitted": 2,
        "materialize": True,
        **FAST_ARGS,
    }
    args.update(kwargs)
    return IceProdSubmitDatasetOperator(**args)  # type: ignore[arg-type]


def _assert_dataset_xcoms(dag_run: object, ip: LocalIceProd, dataset: dict) -> None:
    found = xcoms(dag_run, "submit")
    assert found["dataset_id"] == dataset["dataset_id"]
    assert found["dataset"] == dataset["dataset"]
    assert found["url"] == f"{ip.website_url}/dataset/{dataset['dataset_id']}"
    assert found[LINK_KEY] == found["url"]


def test_submit_and_wait_sync_returns_id_and_pushes_xcoms_and_link(
    iceprod_connection, airflow_db, monkeypatch
) -> None:
    from airflow_provider_iceprod import dataset_config

    validated: list[object] = []
    real_validate = dataset_config.validate_config
    here = threading.get_ident()  # the stand-in validates too, as IceProd does, in its own thread

    def counting_validate(config, **kwargs):
        if threading.get_ident() == here:
            validated.append(config)
        return real_validate(config, **kwargs)

    monkeypatch.setattr(dataset_config, "validate_config", counting_validate)
    ip = iceprod_connection
    with make_dag("op_submit_sync") as dag:
        _submit(wait_for_completion=True, deferrable=False)
    dag_run = run_dag(dag)

    assert len(validated) == 1  # the operator hands the checked request to the hook: one validation

    assert str(dag_run.state) == "success"
    [dataset] = ip.datasets()
    assert dataset["status"] == "complete"
    marker = submit_marker(dag.dag_id, dag_run.run_id, "submit", -1)
    assert dataset["description"] == f"operator test [airflow:{marker}]"
    assert xcoms(dag_run, "submit")["return_value"] == dataset["dataset_id"]
    _assert_dataset_xcoms(dag_run, ip, dataset)
    assert ip.counters.matching(r"^POST /actions/submit$") == 1
    assert ip.counters.matching(r"^POST /actions/materialization$") == 1


def test_submit_deferrable_waits_in_the_trigger(iceprod_connection, airflow_db, later, monkeypatch) -> None:
    from airflow_provider_iceprod.triggers.dataset import IceProdDatasetTrigger

    runs: list[dict] = []
    original_run = IceProdDatasetTrigger.run

    ip = iceprod_connection

    def spy_run(self):  # dag.test() runs the trigger in this process
        runs.append(self.serialize()[1])
        later(0.3, ip.grid.resume)  # the dataset can finish only once the wait is in the trigger
        return original_run(self)

    monkeypatch.setattr(IceProdDatasetTrigger, "run", spy_run)
    ip.grid.pause()
    with make_dag("op_submit_deferrable") as dag:
        _submit(wait_for_completion=True, deferrable=True, cancel_on_kill=False, wait_timeout=60)
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "success"
    assert len(runs) == 1
    assert runs[0]["wait_options"]["poll_interval"] == FAST_ARGS["poll_interval"]
    assert runs[0]["cancel_on_kill"] is False
    assert runs[0]["hook_params"] == FAST_ARGS["hook_params"]  # unchanged, so the trigger's hook is the same
    [dataset] = ip.datasets()
    assert dataset["status"] == "complete"
    assert xcoms(dag_run, "submit")["return_value"] == dataset["dataset_id"]
    _assert_dataset_xcoms(dag_run, ip, dataset)


def test_submit_without_wait_returns_at_once(iceprod_connection, airflow_db) -> None:
    ip = iceprod_connection
    with make_dag("op_submit_nowait") as dag:
        _submit(materialize=False, priority=0.8, start_suspended=True, debug=True)
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "success"
    [dataset] = ip.datasets()
    assert dataset["status"] == "suspended"
    assert dataset["priority"] == 0.8
    assert dataset["debug"] is True
    assert ip.counters.matching(r"materialization") == 0
    _assert_dataset_xcoms(dag_run, ip, dataset)


def test_failure_after_submit_retries_onto_the_same_dataset_via_task_state_store(
    iceprod_connection, airflow_db
) -> None:
    ip = iceprod_connection
    # The first progress poll fails (no hook retries, no tolerated poll errors): try 1 fails after
    # the dataset exists; try 2 must reattach to it.
    ip.faults.add(r"job_counts/status", status=500, times=1)
    with make_dag("op_submit_retry_store", retries=1) as dag:
        _submit(wait_for_completion=True, deferrable=False, tolerate_errors=0, on_outage="fail")
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "success"
    assert try_numbers(dag_run, "submit") == 2
    assert ip.dataset_count() == 1
    assert ip.counters.matching(r"^POST /actions/submit$") == 1
    # Try 2 found the dataset id in the task state store: no second marker look-up (GET /datasets).
    assert ip.counters.get("GET /datasets") == 1
    [dataset] = ip.datasets()
    assert dataset["status"] == "complete"
    _assert_dataset_xcoms(dag_run, ip, dataset)


def test_failure_after_submit_retries_onto_the_same_dataset_via_marker_without_state_store(
    iceprod_connection, airflow_db, monkeypatch
) -> None:
    """What happens on Airflow < 3.3: no task state store, the description marker finds the dataset."""
    monkeypatch.setattr("airflow_provider_iceprod.operators._resume.AIRFLOW_V_3_3_PLUS", False)
    ip = iceprod_connection
    ip.faults.add(r"job_counts/status", status=500, times=1)
    with make_dag("op_submit_retry_marker", retries=1) as dag:
        _submit(wait_for_completion=True, deferrable=False, tolerate_errors=0, on_outage="fail")
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "success"
    assert try_numbers(dag_run, "submit") == 2
    assert ip.dataset_count() == 1
    assert ip.counters.matching(r"^POST /actions/submit$") == 1
    assert ip.counters.get("GET /datasets") == 2  # one look-up per try
    assert ip.datasets()[0]["status"] == "complete"


@pytest.fixture
def short_lived_actions(monkeypatch: pytest.MonkeyPatch, airflow_db) -> Iterator[LocalIceProd]:
    """A stand-in whose /actions records expire after 0.3 s (IceProd: about a day)."""
    with LocalIceProd(auto_approve_as="alice", action_record_ttl=0.3, **FAST_DEFAULTS) as ip:
        conn = ip.airflow_connection_json(conn_id="iceprod_default", username="alice")
        monkeypatch.setenv("AIRFLOW_CONN_ICEPROD_DEFAULT", conn)
        yield ip


def test_retry_after_the_submit_request_record_expired_falls_back_to_the_marker(short_lived_actions) -> None:
    ip = short_lived_actions
    # Try 1 dies while polling its submit request: the request id is stored, the dataset id is not.
    ip.faults.add(r"^GET /actions/submit/", status=500, times=1)
    with make_dag("op_submit_expired_request") as dag:
        _submit(retries=1, retry_delay=timedelta(seconds=1))
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "success"
    assert try_numbers(dag_run, "submit") == 2
    assert ip.dataset_count() == 1
    assert ip.counters.matching(r"^POST /actions/submit$") == 1
    # Try 2 asked for the stored request id (404: expired), then found the dataset by its marker.
    assert ip.counters.matching(r"^GET /actions/submit/") >= 2
    assert ip.counters.get("GET /datasets") == 2
    _assert_dataset_xcoms(dag_run, ip, ip.datasets()[0])


def test_xcoms_and_link_are_kept_when_the_dataset_fails(iceprod_connection, airflow_db) -> None:
    ip = iceprod_connection
    ip.grid.fail_task("generate", probability=1.0)
    with make_dag("op_submit_fails") as dag:
        _submit(config=ONE_TASK, wait_for_completion=True, deferrable=False)
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "failed"
    assert ti_states(dag_run)[("submit", -1)] == "failed"
    [dataset] = ip.datasets()
    assert dataset["status"] == "errors"
    _assert_dataset_xcoms(dag_run, ip, dataset)
    assert "return_value" not in xcoms(dag_run, "submit")


# ---------------------------------------------------------------------------- on_existing_failed


def _run_twice(ip: LocalIceProd, dag_id: str, policy: str) -> tuple[object, object]:
    """Run 1 ends with the dataset in errors; run 2 is the same DAG run again (like a clear)."""
    ip.grid.fail_task("generate", times=1)  # only the first generate task fails
    when = datetime(2025, 1, 1, tzinfo=UTC)
    with make_dag(dag_id) as dag:
        _submit(config=ONE_TASK, jobs_submitted=1, wait_for_completion=True, on_existing_failed=policy)
    first = run_dag(dag, logical_date=when, run_after=when)
    assert str(first.state) == "failed"
    assert [d["status"] for d in ip.datasets()] == ["errors"]
    second = run_dag(dag, logical_date=when, run_after=when)
    assert second.run_id == first.run_id
    return first, second


def test_on_existing_failed_reset_retries_the_failed_tasks(iceprod_connection, airflow_db) -> None:
    ip = iceprod_connection
    _, second = _run_twice(ip, "op_policy_reset", "reset")

    assert str(second.state) == "success"
    assert ip.dataset_count() == 1
    assert ip.datasets()[0]["status"] == "complete"
    # the dataset was in errors: the dataset-level reset (docs/iceprod-quirks.md, 2)
    assert ip.counters.matching(r"^POST /actions/dataset_status$") == 1
    assert ip.counters.matching(r"^POST /actions/task_status$") == 0
    assert ip.counters.matching(r"^POST /actions/submit$") == 1


def test_on_existing_failed_fail_refuses(iceprod_connection, airflow_db) -> None:
    ip = iceprod_connection
    _, second = _run_twice(ip, "op_policy_fail", "fail")

    assert str(second.state) == "failed"
    assert ip.dataset_count() == 1
    assert ip.datasets()[0]["status"] == "errors"
    assert ip.counters.matching(r"^POST /actions/(task_status|dataset_status)$") == 0


def test_on_existing_failed_resubmit_supersedes_the_old_dataset(iceprod_connection, airflow_db) -> None:
    ip = iceprod_connection
    first, second = _run_twice(ip, "op_policy_resubmit", "resubmit")

    assert str(second.state) == "success"
    old, new = sorted(ip.datasets(), key=lambda d: d["dataset"])
    marker = submit_marker("op_policy_resubmit", first.run_id, "submit", -1)
    assert old["status"] == "errors"
    assert old["description"].endswith(f"[airflow-superseded:{marker}]")
    assert new["status"] == "complete"
    assert new["description"].endswith(f"[airflow:{marker}]")
    assert xcoms(second, "submit")["dataset_id"] == new["dataset_id"]


def test_policy_fail_message_names_the_dataset_and_the_choices(iceprod_connection) -> None:
    from airflow_provider_iceprod.models import SubmitResult
    from airflow_provider_iceprod.operators._resume import SubmitState

    ip = iceprod_connection
    dataset_id = ip.create_dataset(description="old [airflow:abc]", status="errors")
    op = _submit(on_existing_failed="fail")
    existing = SubmitResult(None, dataset_id, ip.dataset(dataset_id)["dataset"], "u", reattached=True)
    with pytest.raises(IceProdDatasetFailedError, match="on_existing_failed='fail'") as err:
        op._apply_existing_policy(SubmitState({}, op.log), "abc", op.prepare("abc"), existing)
    assert "retry_failed" in str(err.value)
    assert dataset_id in str(err.value)


# ---------------------------------------------------------------------------------- on_kill


def test_on_kill_suspends_the_dataset_once_and_never_raises(iceprod_connection) -> None:
    ip = iceprod_connection
    ip.grid.pause()  # keep the dataset processing
    dataset_id = ip.create_dataset(jobs_submitted=1, materialize=True)
    op = _submit()
    op._dataset_id = dataset_id
    op._waiting = True
    op.on_kill()
    assert ip.dataset(dataset_id)["status"] == "suspended"
    before = ip.counters.total()
    op.on_kill()  # idempotent: nothing sent again
    assert ip.counters.total() == before


def test_on_kill_does_nothing_when_not_waiting_or_disabled(iceprod_connection) -> None:
    ip = iceprod_connection
    ip.grid.pause()
    dataset_id = ip.create_dataset(jobs_submitted=1)
    not_waiting = _submit()
    not_waiting._dataset_id = dataset_id
    not_waiting.on_kill()
    disabled = _submit(cancel_on_kill=False)
    disabled._dataset_id, disabled._waiting = dataset_id, True
    disabled.on_kill()
    assert ip.dataset(dataset_id)["status"] == "processing"
    assert ip.counters.total() == 0


def test_on_kill_swallows_errors(iceprod_connection, capsys) -> None:
    ip = iceprod_connection
    op = _submit(iceprod_conn_id="no_such_connection")
    op._dataset_id, op._waiting = "0" * 32, True
    capsys.readouterr()
    op.on_kill()  # must not raise...
    # ...but says why it could not suspend (Airflow's task logger writes to the console here)
    captured = capsys.readouterr()
    warning = [line for line in (captured.out + captured.err).splitlines() if "on_kill: could not" in line]
    assert len(warning) == 1 and "0" * 32 in warning[0] and "no_such_connection" in warning[0]
    assert ip.counters.total() == 0


# ----------------------------------------------------------------------------------- assets


def test_asset_alias_emits_an_event_for_the_dataset(iceprod_connection, airflow_db) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_provider_iceprod.assets import iceprod_asset_uri

    ip = iceprod_connection
    with make_dag("op_submit_asset") as dag:
        _submit(wait_for_completion=True, asset_alias="op-test-alias")
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "success"
    [dataset] = ip.datasets()
    uri = iceprod_asset_uri(ip.api_url, dataset["dataset"])
    with create_session() as session:
        query = select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
        events = session.scalars(query.where(AssetModel.uri == uri)).all()
        assert len(events) == 1
        extra = dict(events[0].extra)
    assert extra["dataset_id"] == dataset["dataset_id"]
    assert extra["dataset"] == dataset["dataset"]
    assert extra["status"] == "complete"
    assert extra["job_counts"] == {"complete": 2}


def test_a_dataset_started_suspended_is_not_resumed_on_retry(iceprod_connection, airflow_db) -> None:
    ip = iceprod_connection
    ip.faults.add(r"^GET /datasets/\{dataset_id\}$", status=500, times=1)  # try 1 fails after the submit
    with make_dag("op_submit_suspended_retry", retries=1) as dag:
        _submit(materialize=False, start_suspended=True)
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "success"
    assert try_numbers(dag_run, "submit") == 2
    assert ip.dataset_count() == 1
    assert ip.datasets()[0]["status"] == "suspended"
    assert ip.counters.matching(r"^POST /actions/dataset_status$") == 0


def test_zero_jobs_submits_an_empty_dataset_once_and_a_retry_keeps_it(iceprod_connection, airflow_db) -> None:
    """IceProd accepts jobs_submitted=0 and suspends the empty dataset itself: a retry reattaches to
    it as it is (no resume, no second dataset), and there is nothing to materialize."""
    ip = iceprod_connection
    # try 1 fails on its read after the submit; the slow answer lets IceProd's completion pass
    # suspend the empty dataset first (its cron runs every grid tick), so try 2 finds it suspended
    ip.faults.add(r"^GET /datasets/\{dataset_id\}$", status=500, times=1, latency=0.5)
    with make_dag("op_submit_zero_jobs", retries=1) as dag:
        _submit(jobs_submitted=0)  # materialize=True
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "success"
    assert try_numbers(dag_run, "submit") == 2
    assert ip.dataset_count() == 1
    assert ip.counters.matching(r"^POST /actions/submit$") == 1
    [dataset] = ip.datasets()
    assert (dataset["jobs_submitted"], dataset["tasks_submitted"]) == (0, 0)
    assert dataset["status"] == "suspended"
    assert ip.store.dataset_jobs(dataset["dataset_id"]) == {}
    assert ip.counters.matching(r"materialization") == 0  # nothing to materialize
    assert ip.counters.matching(r"^POST /actions/dataset_status$") == 0  # not "resumed"
    _assert_dataset_xcoms(dag_run, ip, dataset)


def test_a_retry_after_a_crash_before_the_request_id_was_saved_never_submits_twice(
    iceprod_connection, airflow_db, monkeypatch
) -> None:
    """Issue 13 #2: try 1's submit is accepted, but its request id never reaches the task state
    store (a failed write is only logged) and the try dies; IceProd's worker is slow. Try 2 knows
    from the stored send time that a submit may be queued, and waits for it instead of sending
    a second one."""
    from airflow_provider_iceprod.operators._resume import REQUEST_ID_KEY, SubmitState

    real_set = SubmitState.set

    def lose_the_request_id(self: SubmitState, key: str, value: str) -> None:
        if key != REQUEST_ID_KEY:
            real_set(self, key, value)

    monkeypatch.setattr(SubmitState, "set", lose_the_request_id)
    ip = iceprod_connection
    ip.actions.delay = 2.0  # the dataset exists ~4 s after the submit was accepted
    ip.faults.add(r"^GET /actions/submit/", status=500, times=1)  # try 1 dies right after the POST
    with make_dag("op_submit_crash_no_request_id", retries=1) as dag:
        _submit(materialize=False, reconcile_grace=30)
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "success"
    assert try_numbers(dag_run, "submit") == 2
    assert ip.counters.matching(r"^POST /actions/submit$") == 1
    assert ip.dataset_count() == 1
    _assert_dataset_xcoms(dag_run, ip, ip.datasets()[0])


def test_a_lost_submit_answer_with_a_slow_worker_fails_without_retries(
    iceprod_connection, airflow_db
) -> None:
    """Issue 13 #2: the answer is lost and the worker is slower than ``reconcile_grace``: the task
    fails for good (retries would risk a second dataset) instead of submitting again."""
    ip = iceprod_connection
    ip.actions.delay = 1.0
    ip.faults.add(r"^POST /actions/submit$", drop=True, when="after", times=1)
    with make_dag("op_submit_lost_slow", retries=2) as dag:
        _submit(materialize=False, reconcile_grace=0.3)
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "failed"
    assert try_numbers(dag_run, "submit") == 1  # IceProdUncertainError: no retry
    assert ip.counters.matching(r"^POST /actions/submit$") == 1


def test_reconcile_grace_is_checked_when_the_dag_is_parsed() -> None:
    from airflow_provider_iceprod.exceptions import IceProdConfigError

    with pytest.raises(IceProdConfigError, match="reconcile_grace"):
        _submit(reconcile_grace=-1)
