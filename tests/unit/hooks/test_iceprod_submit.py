"""Submitting never creates a second dataset: marker reattach, lost answers, safe re-sends."""

from __future__ import annotations

import json

import pytest
from hook_helpers import CONFIG, api_requests

from airflow_provider_iceprod.exceptions import (
    IceProdAmbiguousError,
    IceProdDatasetConfigError,
    IceProdTransientError,
    IceProdUncertainError,
)
from airflow_provider_iceprod.hooks.iceprod import IceProdHook
from airflow_provider_iceprod.testing.server import LocalIceProd

SUBMIT = "POST /actions/submit"


def submit(hook: IceProdHook, **kwargs: object):
    args: dict = {"description": "airflow test", "jobs_submitted": 2, "marker": "dag.run.task.0", **kwargs}
    return hook.submit_dataset(CONFIG, reconcile_grace=5, **args)


def test_submit_polls_until_the_dataset_exists(hook: IceProdHook, ip: LocalIceProd) -> None:
    requests: list[str] = []
    result = submit(hook, on_request=requests.append)
    assert requests == [result.request_id]
    assert not result.reattached
    doc = ip.dataset(result.dataset_id)
    assert doc["description"] == "airflow test [airflow:dag.run.task.0]"
    assert (doc["jobs_submitted"], doc["tasks_per_job"], doc["username"]) == (2, 2, "alice")
    assert result.dataset == doc["dataset"]
    assert result.url == f"{ip.website_url}/dataset/{result.dataset_id}"
    assert ip.config(result.dataset_id) is not None
    assert ip.counters.get(SUBMIT) == 1


def test_same_marker_reattaches(hook: IceProdHook, ip: LocalIceProd) -> None:
    first = submit(hook)
    ip.reset_counters()
    again = submit(hook)
    assert again.reattached and again.dataset_id == first.dataset_id and again.request_id is None
    assert ip.dataset_count() == 1
    assert SUBMIT not in api_requests(ip)
    found = hook.find_dataset_by_marker("dag.run.task.0")
    assert found is not None and found.dataset_id == first.dataset_id
    assert hook.find_dataset_by_marker("other") is None


def test_bad_config_fails_before_any_request(hook: IceProdHook, ip: LocalIceProd) -> None:
    bad = {"version": 3.2, "tasks": [{"name": "a", "trays": [{"modules": []}]}]}
    with pytest.raises(IceProdDatasetConfigError):
        hook.submit_dataset(bad, description="x", jobs_submitted=1)
    assert ip.counters.total() == 0


def test_lost_submit_answer_does_not_create_a_second_dataset(hook: IceProdHook, ip: LocalIceProd) -> None:
    ip.faults.add(SUBMIT, drop=True, when="after", times=1)  # IceProd acted; the 201 never arrives
    result = submit(hook)
    assert ip.dataset_count() == 1
    assert ip.counters.get(SUBMIT) == 1  # never re-sent
    assert result.request_id is None and not result.reattached
    assert ip.config(result.dataset_id) is not None


def test_lost_submit_answer_500_after(hook: IceProdHook, ip: LocalIceProd) -> None:
    ip.faults.add(SUBMIT, status=500, when="after", times=1)
    result = submit(hook)
    assert ip.dataset_count() == 1 and ip.counters.get(SUBMIT) == 1
    assert ip.dataset(result.dataset_id)["description"].endswith("[airflow:dag.run.task.0]")


def test_submit_timeout_after_send_is_reconciled(ip: LocalIceProd) -> None:
    hook = IceProdHook(retry_limit=3, retry_delay=0.01, timeout=0.5, poll_interval=0.05)
    ip.faults.add(SUBMIT, latency=2.0, when="after", times=1)  # acted, then too slow to answer
    submit(hook)
    assert ip.dataset_count() == 1 and ip.counters.get(SUBMIT) == 1


@pytest.mark.parametrize("status", [503, 429])
def test_submit_rejected_before_the_handler_is_resent(
    hook: IceProdHook, ip: LocalIceProd, status: int
) -> None:
    ip.faults.add(SUBMIT, status=status, retry_after=0.1, times=1)
    result = submit(hook)
    assert ip.counters.get(SUBMIT) == 2
    assert ip.dataset_count() == 1 and result.request_id


def test_submit_connection_refused_is_resent(ip: LocalIceProd, monkeypatch: pytest.MonkeyPatch) -> None:
    """A connect error provably never reached IceProd: the same request may go out again."""
    conn = json.loads(ip.airflow_connection_json())
    conn["extra"]["actions_url"] = "http://127.0.0.1:9"  # nothing listens on the discard port
    monkeypatch.setenv("AIRFLOW_CONN_ICEPROD_NO_ACTIONS", json.dumps(conn))
    hook = IceProdHook("iceprod_no_actions", retry_limit=3, retry_delay=0.01, poll_interval=0.05)
    with pytest.raises(IceProdTransientError) as info:
        submit(hook)
    assert not isinstance(info.value, IceProdAmbiguousError)
    assert "gave up after 4 attempts" in str(info.value)
    assert ip.dataset_count() == 0


def test_ambiguous_failure_with_nothing_created_is_not_resent(hook: IceProdHook, ip: LocalIceProd) -> None:
    ip.faults.add(SUBMIT, status=502, times=1)  # a proxy error: the client cannot know it never arrived
    with pytest.raises(IceProdAmbiguousError) as info:
        hook.submit_dataset(CONFIG, description="d", jobs_submitted=1, marker="m-502", reconcile_grace=0.3)
    assert "After 0.3 s no dataset carries [airflow:m-502]" in str(info.value)
    assert "probably" not in str(info.value)
    assert not isinstance(info.value, IceProdUncertainError)  # IceProd's queue proves nothing was created
    assert ip.counters.get(SUBMIT) == 1
    assert ip.dataset_count() == 0
    # A later try with the same marker looks again, finds nothing, and submits.
    result = hook.submit_dataset(
        CONFIG, description="d", jobs_submitted=1, marker="m-502", reconcile_grace=0.3
    )
    assert ip.dataset_count() == 1 and not result.reattached


def test_resume_request_id_waits_for_the_earlier_request(hook: IceProdHook, ip: LocalIceProd) -> None:
    seen: list[str] = []
    first = submit(hook, on_request=seen.append)
    ip.reset_counters()
    again = submit(hook, resume_request_id=seen[0], marker="another-marker")
    assert again.reattached and again.dataset_id == first.dataset_id and again.request_id == seen[0]
    assert SUBMIT not in api_requests(ip)
    assert ip.dataset_count() == 1


def test_low_level_submit(hook: IceProdHook, ip: LocalIceProd) -> None:
    result = submit(hook, low_level=True, extra_submit_fields={"priority": 1})
    doc = ip.dataset(result.dataset_id)
    assert doc["priority"] == 1.0 and doc["tasks_submitted"] == 4
    assert ip.config(result.dataset_id)["tasks"][1]["name"] == "process"
    assert api_requests(ip)["POST /datasets"] == 1
    assert result.request_id is None


def test_low_level_lost_answer_is_reconciled_and_config_stored(hook: IceProdHook, ip: LocalIceProd) -> None:
    ip.faults.add("POST /datasets$", drop=True, when="after", times=1)
    result = submit(hook, low_level=True)
    assert ip.dataset_count() == 1
    assert ip.counters.get("POST /datasets") == 1
    assert ip.config(result.dataset_id) is not None  # PUT /config after reconciling


def test_low_level_reattach_stores_a_missing_config(hook: IceProdHook, ip: LocalIceProd) -> None:
    ip.faults.add("PUT /config/", status=503, times=10)  # the config never got stored
    with pytest.raises(IceProdTransientError):
        submit(hook, low_level=True)
    assert ip.dataset_count() == 1
    (dataset,) = ip.datasets()
    assert ip.config(dataset["dataset_id"]) is None
    ip.faults.clear()
    result = submit(hook, low_level=True)  # the retry of the task
    assert result.reattached and ip.dataset_count() == 1
    assert ip.config(result.dataset_id) is not None


def test_materialize_after_submit(hook: IceProdHook, ip: LocalIceProd) -> None:
    result = submit(hook, materialize=True)
    assert api_requests(ip)["POST /actions/materialization"] == 1
    hook.wait_for_action("materialization", hook.materialize(result.dataset_id, wait=False).request_id)
    assert len(ip.jobs(result.dataset_id)) == 2


@pytest.mark.parametrize("low_level", [False, True])
def test_zero_jobs_makes_an_empty_dataset_once(hook: IceProdHook, ip: LocalIceProd, low_level: bool) -> None:
    """``jobs_submitted=0`` as IceProd takes it: an empty dataset (jobs come through add_jobs). The
    submit waits for no job, and a retry with the same marker reattaches."""
    result = submit(hook, jobs_submitted=0, low_level=low_level, materialize=True)
    doc = ip.dataset(result.dataset_id)
    assert (doc["jobs_submitted"], doc["tasks_submitted"], doc["tasks_per_job"]) == (0, 0, 2)
    assert ip.config(result.dataset_id) is not None
    assert api_requests(ip)["POST /actions/materialization"] == 1
    again = submit(hook, jobs_submitted=0, low_level=low_level)
    assert again.reattached and again.dataset_id == result.dataset_id and ip.dataset_count() == 1
    assert hook.add_jobs(result.dataset_id, 3) == 3
    assert ip.dataset(result.dataset_id)["tasks_submitted"] == 6


def test_lost_submit_answer_with_a_worker_slower_than_the_grace_is_never_resent(
    hook: IceProdHook, ip: LocalIceProd
) -> None:
    """Issue 13 #2: the answer is lost and IceProd's actions worker takes longer than
    ``reconcile_grace``: the try fails for good, naming the marker and the time, and a later try
    with the same marker waits for the earlier submit instead of sending a second one."""
    ip.actions.delay = 0.6  # queued -> processing -> complete: the dataset exists after ~1.2 s
    ip.faults.add(SUBMIT, drop=True, when="after", times=1)
    with pytest.raises(IceProdUncertainError) as info:
        hook.submit_dataset(CONFIG, description="d", jobs_submitted=1, marker="m-slow", reconcile_grace=0.2)
    message = str(info.value)
    assert "[airflow:m-slow]" in message and "sent at 20" in message and "UTC" in message
    assert "queued or processing" in message and "A person must check" in message
    assert "probably" not in message
    assert ip.dataset_count() == 0  # not yet: the worker is slow
    again = hook.submit_dataset(
        CONFIG, description="d", jobs_submitted=1, marker="m-slow", reconcile_grace=10
    )
    assert again.reattached
    assert ip.counters.get(SUBMIT) == 1
    assert ip.dataset_count() == 1


@pytest.mark.parametrize("form", ["sync", "async"])
def test_crash_between_accepted_and_created_without_a_request_id(
    hook: IceProdHook, ip: LocalIceProd, form: str
) -> None:
    """Issue 13 #2, direct hook use: an earlier run's submit was accepted, then the process died
    before it saved the request id. A new run with the same marker, while IceProd's worker has not
    created the dataset yet, must not submit a second one."""
    import asyncio

    from airflow_provider_iceprod.api import checks

    ip.actions.delay = 0.4
    request = checks.check_submit(CONFIG, description="d", jobs_submitted=1, marker="m-crash")
    # The earlier run: the POST is accepted (its id would have been saved next; the process died).
    hook._run(lambda ctx: iter_one(calls_post_submit(request)))
    assert ip.dataset_count() == 0
    args = {"description": "d", "jobs_submitted": 1, "marker": "m-crash", "reconcile_grace": 10}
    if form == "sync":
        result = hook.submit_dataset(CONFIG, **args)  # type: ignore[arg-type]
    else:
        result = asyncio.run(hook.asubmit_dataset(CONFIG, **args))  # type: ignore[arg-type]
    assert result.reattached
    assert ip.counters.get(SUBMIT) == 1
    assert ip.dataset_count() == 1


def test_a_known_earlier_send_still_queued_after_the_grace_fails_for_good(
    hook: IceProdHook, ip: LocalIceProd
) -> None:
    """``sent_at`` of an earlier try whose submit is still queued after ``reconcile_grace``: the
    new try fails without submitting (IceProdUncertainError, not retryable)."""
    import time

    from airflow_provider_iceprod.api import checks

    ip.actions.delay = 5.0
    request = checks.check_submit(CONFIG, description="d", jobs_submitted=1, marker="m-old")
    sent = time.time() - 60
    hook._run(lambda ctx: iter_one(calls_post_submit(request)))
    with pytest.raises(IceProdUncertainError) as info:
        hook.submit_dataset(
            CONFIG, description="d", jobs_submitted=1, marker="m-old", reconcile_grace=30, sent_at=sent
        )
    assert "[airflow:m-old]" in str(info.value)
    assert ip.counters.get(SUBMIT) == 1


def test_on_send_runs_before_the_submit_and_can_stop_it(hook: IceProdHook, ip: LocalIceProd) -> None:
    sent: list[float] = []
    submit(hook, on_send=sent.append)
    assert len(sent) == 1 and ip.counters.get(SUBMIT) == 1

    def refuse(when: float) -> None:
        raise IceProdTransientError("cannot persist the send time")

    with pytest.raises(IceProdTransientError):
        submit(hook, marker="m-refused", on_send=refuse)
    assert ip.counters.get(SUBMIT) == 1


def calls_post_submit(request: object):
    from airflow_provider_iceprod.api import calls

    return calls.post_action("submit", request.submit_body())  # type: ignore[attr-defined]


def iter_one(call: object):
    return (yield call)
