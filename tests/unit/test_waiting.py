"""The pure decision logic in ``airflow_provider_iceprod.waiting`` (no server needed)."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout

from airflow_provider_iceprod.exceptions import (
    IceProdAuthError,
    IceProdDatasetFailedError,
    IceProdError,
    IceProdPermissionError,
)
from airflow_provider_iceprod.models import DatasetProgress
from airflow_provider_iceprod.waiting import (
    WaitOptions,
    WaitState,
    describe_progress,
    error_event,
    evaluate,
    event_result,
    make_event,
    status_ends_wait,
    timeout_event,
    with_failed_task_names,
)

DS = "0123456789abcdef0123456789abcdef"


def progress(
    status="processing", jobs=None, tasks=None, *, truncated=False, jobs_submitted=4, tasks_per_job=2
):
    return DatasetProgress(
        dataset_id=DS,
        dataset=7,
        status=status,
        truncated=truncated,
        jobs_submitted=jobs_submitted,
        tasks_submitted=jobs_submitted * tasks_per_job,
        job_counts=dict(jobs or {}),
        task_counts=dict(tasks or {}),
    )


def test_options_validate_and_round_trip():
    opts = WaitOptions(
        target_states=("complete", "suspended"), on_suspended="wait", stall_polls=2, poll_interval=5
    )
    assert opts.to_dict() == {
        "target_states": ["complete", "suspended"],
        "on_suspended": "wait",
        "stall_polls": 2,
        "poll_interval": 5.0,
        "tolerate_errors": 3,
        "on_outage": "wait",
    }
    assert WaitOptions.from_dict(opts.to_dict()) == opts
    assert WaitOptions(target_states="complete").target_states == ("complete",)  # type: ignore[arg-type]
    for bad in (
        {"target_states": ()},
        {"target_states": ("done",)},
        {"on_suspended": "retry"},
        {"stall_polls": 0},
        {"stall_polls": True},
        {"poll_interval": 0},
        {"poll_interval": "5"},
        {"tolerate_errors": -1},
    ):
        with pytest.raises(ValueError):
            WaitOptions(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown wait option"):
        WaitOptions.from_dict({"poll": 3})


def test_state_round_trip_and_garbage():
    state = WaitState(stall_count=2, samples=[[1.0, 2.0], [3.0, 5.0]], polls=4, error_count=1)
    assert WaitState.from_dict(state.to_dict()) == state
    assert WaitState.from_dict(None) == WaitState()
    with pytest.raises(ValueError):
        WaitState.from_dict({"stall_count": "x"})


def test_complete_status_is_success():
    v = evaluate(progress("complete", {"complete": 4}), WaitOptions(), WaitState(), 0.0)
    assert (v.done, v.outcome, v.status) == (True, "success", "success")


def test_all_jobs_complete_succeeds_before_the_cron():
    opts = WaitOptions()
    v = evaluate(progress("processing", {"complete": 4}, {"complete": 8}), opts, WaitState(), 0.0)
    assert v.outcome == "success" and "next pass" in v.message
    # fewer complete jobs than submitted (not all materialized yet): still running
    v = evaluate(progress("processing", {"complete": 3}, {"complete": 6}), opts, WaitState(), 0.0)
    assert not v.done
    # job counts not from this poll: the shortcut is not taken
    v = evaluate(progress("processing", {"complete": 4}), opts, WaitState(), 0.0, jobs_fresh=False)
    assert not v.done


def test_truncated_dataset_completes_when_existing_jobs_finish():
    opts = WaitOptions()
    done = progress("processing", {"complete": 2}, {"complete": 4}, truncated=True)
    assert evaluate(done, opts, WaitState(), 0.0).outcome == "success"
    busy = progress("processing", {"complete": 1, "processing": 1}, truncated=True)
    assert not evaluate(busy, opts, WaitState(), 0.0).done
    nothing = progress("processing", {}, {}, truncated=True)
    assert not evaluate(nothing, opts, WaitState(), 0.0).done


def test_errors_fail_fast_unless_targeted():
    v = evaluate(progress("errors", {"errors": 1}), WaitOptions(), WaitState(), 0.0)
    assert (v.done, v.outcome, v.status) == (True, "errors", "failed")
    assert "errors" in v.message
    v = evaluate(progress("errors"), WaitOptions(target_states=("errors",)), WaitState(), 0.0)
    assert v.status == "success"


@pytest.mark.parametrize(
    ("mode", "done", "status"),
    [("fail", True, "failed"), ("wait", False, "running"), ("timeout", True, "timeout")],
)
def test_on_suspended(mode, done, status):
    v = evaluate(progress("suspended"), WaitOptions(on_suspended=mode), WaitState(), 0.0)
    assert (v.done, v.status) == (done, status)
    assert status_ends_wait("suspended", WaitOptions(on_suspended=mode)) is done


def test_complete_but_not_a_target_is_unreachable():
    v = evaluate(progress("complete"), WaitOptions(target_states=("suspended",)), WaitState(), 0.0)
    assert (v.done, v.outcome, v.status) == (True, "unreachable", "failed")


def test_unknown_or_empty_status_keeps_running():
    assert not evaluate(progress(""), WaitOptions(), WaitState(), 0.0).done
    assert not evaluate(progress("weird"), WaitOptions(), WaitState(), 0.0).done


def test_stall_needs_consecutive_polls_and_resets():
    opts = WaitOptions(stall_polls=3)
    state = WaitState()
    stalled = progress("processing", {"processing": 4}, {"complete": 2, "failed": 1, "idle": 5})
    moving = progress("processing", {"processing": 4}, {"complete": 2, "failed": 1, "idle": 4, "queued": 1})
    assert not evaluate(stalled, opts, state, 1.0).done
    assert not evaluate(stalled, opts, state, 2.0).done
    assert state.stall_count == 2
    assert not evaluate(moving, opts, state, 3.0).done
    assert state.stall_count == 0
    # polls without fresh counts neither count nor reset
    evaluate(stalled, opts, state, 4.0)
    evaluate(stalled, opts, state, 5.0, counts_fresh=False)
    evaluate(stalled, opts, state, 6.0)
    v = evaluate(stalled, opts, state, 7.0)
    assert (v.done, v.outcome, v.status) == (True, "stalled", "failed")
    assert "1 failed task(s)" in v.message and "3 consecutive polls" in v.message
    v = with_failed_task_names(v, {"generate": {"complete": 2, "failed": 1}, "process": {"idle": 5}})
    assert v.message.endswith("Failed tasks: generate (1).")


def test_progress_line_with_eta():
    state = WaitState()
    opts = WaitOptions()
    evaluate(progress("processing", {"processing": 4}, {"complete": 0, "idle": 8}), opts, state, 100.0)
    p = progress("processing", {"complete": 1, "processing": 3}, {"complete": 2, "idle": 6})
    evaluate(p, opts, state, 110.0)  # 2 tasks in 10 s -> 6 left -> 30 s
    line = describe_progress(p, state)
    assert "jobs 1/4 complete" in line
    assert "tasks {complete: 2, idle: 6}" in line
    assert "25.0%" in line
    assert "ETA 0:00:30" in line
    assert "ETA unknown" in describe_progress(progress(), WaitState())
    assert "no tasks materialized yet" in describe_progress(progress(), WaitState())


def test_event_result_accepts_success_and_raises_for_the_rest():
    ok = make_event("success", DS, outcome="success", message="done", progress=progress("complete"))
    assert event_result(ok) == ok
    with pytest.raises(IceProdDatasetFailedError, match="broken") as exc_info:
        event_result(make_event("failed", DS, outcome="errors", message="broken"))
    assert exc_info.value.dataset_id == DS
    with pytest.raises(AirflowSensorTimeout):
        event_result(timeout_event(DS, 0.0))
    with pytest.raises(IceProdAuthError, match="login"):
        event_result(error_event(DS, IceProdAuthError("run airflow-iceprod login")))
    with pytest.raises(IceProdPermissionError):
        event_result(error_event(DS, IceProdPermissionError("403 attr not found")))
    # an error type that is not ours becomes the base IceProd error
    with pytest.raises(IceProdError, match="KeyError"):
        event_result(error_event(DS, KeyError("x")))


@pytest.mark.parametrize(
    "garbage",
    [
        None,
        "success",
        42,
        {},
        {"status": "success"},
        {"status": "done", "dataset_id": DS},
        {"status": "success", "dataset_id": ""},
        {"status": "success", "dataset_id": DS, "progress": "100%"},
    ],
)
def test_event_result_rejects_garbage(garbage):
    with pytest.raises(AirflowException):
        event_result(garbage)


def test_outage_pause_backs_off_and_is_bounded() -> None:
    """Issue 13 #4: during an outage the pause doubles per failed poll, at most 8 intervals and
    at most MAX_OUTAGE_PAUSE (never below the interval)."""
    from airflow_provider_iceprod.waiting import MAX_OUTAGE_PAUSE, outage_pause, ride_out

    assert [outage_pause(10.0, n) for n in range(6)] == [10.0, 10.0, 20.0, 40.0, 80.0, 80.0]
    assert outage_pause(60.0, 50) == MAX_OUTAGE_PAUSE
    assert outage_pause(600.0, 50) == 600.0
    wait, fail = WaitOptions(tolerate_errors=1), WaitOptions(tolerate_errors=1, on_outage="fail")
    assert [ride_out(wait, n) for n in (1, 2, 9)] == [True, None, None]
    assert [ride_out(fail, n) for n in (1, 2)] == [True, False]
    with pytest.raises(ValueError, match="on_outage"):
        WaitOptions(on_outage="retry")
