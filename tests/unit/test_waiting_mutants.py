"""Wait decisions that once survived a one-line mutation of the provider (issue 18)."""

from __future__ import annotations

from airflow_provider_iceprod.models import DatasetProgress
from airflow_provider_iceprod.wait_progress import eta_seconds
from airflow_provider_iceprod.waiting import WaitOptions, WaitState, evaluate

DS = "0123456789abcdef0123456789abcdef"


def _progress(complete: int, total: int = 100) -> DatasetProgress:
    return DatasetProgress(
        dataset_id=DS,
        dataset=7,
        status="processing",
        truncated=False,
        jobs_submitted=total,
        tasks_submitted=total,
        job_counts={"processing": total - complete, "complete": complete}
        if complete
        else {"processing": total},
        task_counts={"processing": total - complete, "complete": complete}
        if complete
        else {"processing": total},
    )


# ------------------------------------------------ found by `make mutation` (mutmut on waiting.py)


def _p(status="processing", jobs=None, tasks=None, *, truncated=False, jobs_submitted=4) -> DatasetProgress:
    return DatasetProgress(
        dataset_id=DS,
        dataset=7,
        status=status,
        truncated=truncated,
        jobs_submitted=jobs_submitted,
        tasks_submitted=jobs_submitted * 2,
        job_counts=dict(jobs or {}),
        task_counts=dict(tasks or {}),
    )


def test_every_verdict_names_its_outcome_status_and_dataset() -> None:
    label = f"IceProd dataset 7 ({DS})"
    cases = [
        (_p("processing"), WaitOptions(), (False, "running", "running"), f"{label} is processing."),
        (_p(""), WaitOptions(), (False, "running", "running"), f"{label} is in an unknown status."),
        (_p("complete"), WaitOptions(), (True, "success", "success"), f"{label} reached status 'complete'."),
        (
            _p("complete"),
            WaitOptions(target_states=("suspended",)),
            (True, "unreachable", "failed"),
            f"{label} is complete, so it can never reach the target states ['suspended'].",
        ),
        (_p("suspended"), WaitOptions(), (True, "suspended", "failed"), f"{label} is suspended"),
        (
            _p("suspended"),
            WaitOptions(on_suspended="timeout"),
            (True, "suspended", "timeout"),
            f"{label} is suspended",
        ),
        (
            _p("errors", jobs={"errors": 1}, tasks={"failed": 1, "complete": 1}),
            WaitOptions(),
            (True, "errors", "failed"),
            f"{label} is in status 'errors': jobs {{errors: 1}}, tasks {{complete: 1, failed: 1}}.",
        ),
    ]
    for progress, options, expected, message in cases:
        verdict = evaluate(progress, options, WaitState(), 0.0)
        assert (verdict.done, verdict.outcome, verdict.status) == expected, progress.status
        assert verdict.message.startswith(message), verdict.message


def test_the_stall_message_holds_both_counts_and_the_advice() -> None:
    state = WaitState()
    stalled = _p(jobs={"processing": 1}, tasks={"failed": 1, "idle": 1})
    verdict = evaluate(stalled, WaitOptions(stall_polls=1), state, 0.0)
    assert (verdict.done, verdict.outcome, verdict.status) == (True, "stalled", "failed")
    assert "tasks {failed: 1, idle: 1}, jobs {processing: 1}" in verdict.message
    assert verdict.message.endswith(
        "Dependants of a failed task stay idle until it is reset; retry the failed tasks."
    )


def test_polls_count_fresh_counts_only_and_success_resets_the_stall_counter() -> None:
    state, options = WaitState(), WaitOptions(stall_polls=5)
    stalled = _p(jobs={"processing": 1}, tasks={"failed": 1, "idle": 1})
    for _ in range(3):
        evaluate(stalled, options, state, 0.0)
    evaluate(stalled, options, state, 0.0, counts_fresh=False)
    assert (state.polls, state.stall_count) == (3, 3)
    evaluate(_p("complete"), options, state, 0.0)
    assert (state.polls, state.stall_count) == (4, 0)
    for _ in range(2):
        evaluate(stalled, options, state, 0.0)
    evaluate(_p(jobs={"complete": 4}), options, state, 0.0)  # success on the job counts
    assert (state.polls, state.stall_count) == (7, 0)


def test_all_complete_tasks_without_failures_are_no_stall() -> None:
    state = WaitState()
    for _ in range(3):
        verdict = evaluate(_p(jobs={"processing": 4}, tasks={"complete": 8}), WaitOptions(), state, 0.0)
    assert state.stall_count == 0 and not verdict.done


def test_no_rate_from_samples_at_one_time_or_one_count() -> None:
    same_time = WaitState(samples=[[5.0, 1.0], [5.0, 3.0]])
    assert same_time.rate() is None and eta_seconds(_progress(3), same_time) is None
    same_count = WaitState(samples=[[5.0, 3.0], [9.0, 3.0]])
    assert same_count.rate() is None and eta_seconds(_progress(3), same_count) is None


def test_which_statuses_end_a_wait_without_counts() -> None:
    from airflow_provider_iceprod.waiting import status_ends_wait

    default = WaitOptions()
    assert status_ends_wait("complete", default) is True
    assert status_ends_wait("errors", default) is True
    assert status_ends_wait("processing", default) is False
    assert status_ends_wait("", default) is False
    # a target state ends it; complete and errors end it even when they are not targets
    suspended_target = WaitOptions(target_states=("suspended",))
    assert status_ends_wait("suspended", suspended_target) is True
    assert status_ends_wait("complete", suspended_target) is True
    assert status_ends_wait("errors", suspended_target) is True
    assert status_ends_wait("suspended", WaitOptions(on_suspended="wait")) is False


def test_an_unreadable_dataset_error_keeps_iceprod_s_answer_and_says_what_to_check() -> None:
    from airflow_provider_iceprod.exceptions import IceProdNotFoundError, IceProdPermissionError
    from airflow_provider_iceprod.waiting import not_visible_error

    denied = IceProdPermissionError(
        "GET /datasets/x: 403 attr not found", status_code=403, iceprod_message="attr not found"
    )
    error = not_visible_error(42, denied, "iceprod_prod")
    assert str(error).startswith(
        "IceProd dataset 42 cannot be read with connection 'iceprod_prod': GET /datasets/x: 403 attr not found. "
        "IceProd answers 403 both when the token may not read a dataset and when no such dataset exists; "
        "check the dataset id/number and that the connection's user may read it."
    )
    assert (error.dataset_id, error.status_code, error.iceprod_message) == ("42", 403, "attr not found")
    gone = IceProdNotFoundError(
        "GET /datasets/y: 404 Dataset not found", status_code=404, iceprod_message="Dataset not found"
    )
    error = not_visible_error(DS, gone)
    assert str(error).startswith(
        f"IceProd dataset {DS} cannot be read: GET /datasets/y: 404 Dataset not found. Check the dataset id or number."
    )
    assert (error.dataset_id, error.status_code, error.iceprod_message) == (DS, 404, "Dataset not found")


def test_failed_task_names_are_added_to_a_stall_only() -> None:
    from airflow_provider_iceprod.waiting import with_failed_task_names

    stalled = evaluate(
        _p(jobs={"processing": 1}, tasks={"failed": 3, "idle": 1}),
        WaitOptions(stall_polls=1),
        WaitState(),
        0.0,
    )
    named = with_failed_task_names(
        stalled, {"b": {"failed": 2}, "a": {"failed": 1, "complete": 4}, "c": {"idle": 1}}
    )
    assert (named.done, named.outcome, named.status) == (True, "stalled", "failed")
    assert named.message == f"{stalled.message} Failed tasks: a (1), b (2)."
    assert with_failed_task_names(stalled, {"c": {"idle": 1}}) is stalled


def test_events_carry_status_outcome_message_and_progress() -> None:
    from airflow_provider_iceprod.waiting import error_event, timeout_event, verdict_event

    progress = _p("complete", jobs={"complete": 4}, tasks={"complete": 8})
    verdict = evaluate(progress, WaitOptions(), WaitState(), 0.0)
    assert verdict_event(verdict, progress) == {
        "status": "success",
        "dataset_id": DS,
        "outcome": "success",
        "message": verdict.message,
        "progress": progress.as_dict(),
    }
    late = timeout_event(DS, 0.0, progress)
    assert late == {
        "status": "timeout",
        "dataset_id": DS,
        "outcome": "timeout",
        "message": f"Timed out waiting for IceProd dataset {DS}: the deadline 1970-01-01 00:00:00 UTC passed.",
        "progress": progress.as_dict(),
    }
    assert timeout_event(DS, 0.0)["progress"] is None
    from airflow_provider_iceprod.exceptions import IceProdTransientError

    broken = error_event(DS, IceProdTransientError("GET /x: 503 server overloaded"))
    assert broken == {
        "status": "error",
        "dataset_id": DS,
        "outcome": "error",
        "message": "IceProdTransientError: GET /x: 503 server overloaded",
        "progress": None,
        "error_type": "IceProdTransientError",
    }


def test_option_boundaries_that_are_allowed() -> None:
    options = WaitOptions(poll_interval=0.5, tolerate_errors=0)
    assert options.poll_interval == 0.5 and options.tolerate_errors == 0
    assert isinstance(WaitOptions(poll_interval=2).poll_interval, float)
    assert WaitOptions.from_dict({"target_states": "suspended"}).target_states == ("suspended",)
    assert WaitOptions.from_dict({}).target_states == ("complete",)
