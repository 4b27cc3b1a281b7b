"""The pure decision logic in ``airflow_provider_iceprod.waiting`` (no server needed)."""

from __future__ import annotations

import logging

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout
from wait_helpers import DS, progress

from airflow_provider_iceprod.exceptions import (
    IceProdAuthError,
    IceProdDatasetFailedError,
    IceProdError,
    IceProdPermissionError,
)
from airflow_provider_iceprod.hooks.iceprod import IceProdHook
from airflow_provider_iceprod.models import DatasetProgress
from airflow_provider_iceprod.testing import LocalIceProd
from airflow_provider_iceprod.wait_events import error_event, event_result, make_event, timeout_event
from airflow_provider_iceprod.wait_loop import wait_for_dataset
from airflow_provider_iceprod.wait_progress import HEARTBEAT_SECONDS, describe_progress, progress_line
from airflow_provider_iceprod.waiting import (
    WaitOptions,
    WaitState,
    evaluate,
    status_ends_wait,
    with_failed_task_names,
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


def test_truncated_dataset_waits_for_iceprods_own_verdict():
    """IceProd 3.2.43 keeps creating a truncated dataset's jobs (docs/iceprod-quirks.md, 4): complete
    existing jobs are not the end until IceProd itself says complete."""
    opts = WaitOptions()
    some = progress("processing", {"complete": 2}, {"complete": 4}, truncated=True)
    assert not evaluate(some, opts, WaitState(), 0.0).done
    every = progress("processing", {"complete": 4}, {"complete": 8}, truncated=True)
    assert evaluate(every, opts, WaitState(), 0.0).outcome == "success"
    said = progress("complete", {"complete": 2}, {"complete": 4}, truncated=True)
    assert evaluate(said, opts, WaitState(), 0.0).outcome == "success"
    nothing = progress("processing", {}, {}, truncated=True)
    assert not evaluate(nothing, opts, WaitState(), 0.0).done


def test_complete_status_with_tasks_still_to_run_keeps_waiting():
    """A hard_reset of a complete dataset re-runs its tasks; the status stays complete (quirk 1)."""
    opts = WaitOptions()
    rerun = progress("complete", {"processing": 4}, {"idle": 4, "complete": 4})
    v = evaluate(rerun, opts, WaitState(), 0.0)
    assert (v.done, v.outcome) == (False, "running")
    assert "hard_reset" in v.message
    finished = progress("complete", {"processing": 4}, {"complete": 8})
    assert evaluate(finished, opts, WaitState(), 0.0).outcome == "success"
    # counts not from this poll: the status alone decides
    assert evaluate(rerun, opts, WaitState(), 0.0, counts_fresh=False).outcome == "success"


def test_complete_status_with_jobs_never_created_fails():
    """add_jobs on a complete dataset: IceProd never creates them (quirk 3)."""
    added = progress("complete", {"complete": 1}, {"complete": 2}, jobs_submitted=3)
    v = evaluate(added, WaitOptions(), WaitState(), 0.0)
    assert (v.done, v.outcome, v.status) == (True, "unreachable", "failed")
    assert "1 of 3 jobs" in v.message


def test_failed_materialization_is_stuck_after_an_hour():
    """Fewer jobs than jobs_submitted and nothing to run (quirk 6: a bad depends)."""
    from airflow_provider_iceprod.waiting import MATERIALIZATION_STALL_SECONDS

    opts = WaitOptions(stall_polls=2)
    state = WaitState()
    stuck = progress("processing", {"processing": 1}, {"complete": 1}, jobs_submitted=3)
    assert not evaluate(stuck, opts, state, 0.0).done
    assert not evaluate(stuck, opts, state, MATERIALIZATION_STALL_SECONDS - 1).done
    restored = WaitState.from_dict(state.to_dict())
    v = evaluate(stuck, opts, restored, MATERIALIZATION_STALL_SECONDS)
    assert (v.done, v.outcome, v.status) == (True, "stalled", "failed")
    assert "2 of 3 jobs were never created" in v.message
    # a task to run resets the clock
    state = WaitState()
    evaluate(stuck, opts, state, 0.0)
    evaluate(
        progress("processing", {"processing": 2}, {"complete": 1, "queued": 1}, jobs_submitted=3),
        opts,
        state,
        10,
    )
    assert state.idle_since is None


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


def test_a_suspended_dataset_without_jobs_says_how_to_go_on():
    """IceProd suspends a dataset submitted with jobs_submitted=0 (docs/iceprod-quirks.md, 10)."""
    v = evaluate(progress("suspended", jobs_submitted=0), WaitOptions(), WaitState(), 0.0)
    assert (v.done, v.outcome, v.status) == (True, "suspended", "failed")
    assert "It has no jobs (jobs_submitted=0)" in v.message and "add_jobs" in v.message
    assert "no jobs" not in evaluate(progress("suspended"), WaitOptions(), WaitState(), 0.0).message


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
    evaluate(p, opts, state, 110.0)  # 1 job in 10 s -> 3 left -> 30 s
    line = describe_progress(p, state, 110.0)
    assert "jobs 1/4 complete (25.0%)" in line
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


# ------------------------------------------------- progress lines, heartbeat, percentage, ETA


ONE_TASK_CONFIG = {
    "version": 3.2,
    "tasks": [{"name": "generate", "trays": [{"modules": [{"src": "/usr/bin/true"}]}]}],
}


def jobs_progress(jobs_complete: int, jobs: int = 100, status: str = "processing") -> DatasetProgress:
    job_counts = {"complete": jobs_complete, "processing": jobs - jobs_complete}
    task_counts = {"complete": 2 * jobs_complete, "processing": jobs - jobs_complete}
    return DatasetProgress(
        DS, 7, status, False, jobs, 2 * jobs, {k: v for k, v in job_counts.items() if v}, task_counts
    )


class FakeClock:
    """Time for the wait loop: sleeping advances it (the HTTP calls to the stand-in stay real)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_thirty_unchanged_polls_log_one_progress_line_plus_heartbeats(
    iceprod_connection: LocalIceProd, caplog
) -> None:
    ip = iceprod_connection
    ip.grid.task_duration = 3600.0
    dataset_id = ip.create_dataset(ONE_TASK_CONFIG, jobs_submitted=2, materialize=True)
    ip.grid.pause()  # nothing changes from here on
    clock = FakeClock()
    poll = 300.0  # 30 polls span 29 * 5 = 145 minutes: heartbeats after 30, 60, 90 and 120 minutes
    options = WaitOptions(poll_interval=poll)
    ip.reset_counters()
    log = logging.getLogger("test.iceprod.wait")
    with caplog.at_level(logging.INFO, logger="test.iceprod.wait"), pytest.raises(AirflowSensorTimeout):
        wait_for_dataset(
            IceProdHook("iceprod_default", retry_limit=0),
            dataset_id,
            options,
            deadline=clock.now + 29 * poll,
            log=log,
            sleep=clock.sleep,
            clock=clock,
        )
    polls = ip.counters.get("GET /datasets/{dataset_id}/task_counts/status")
    assert polls == 30
    lines = [r.getMessage() for r in caplog.records if r.name == "test.iceprod.wait"]
    progress_lines = [ln for ln in lines if ln.startswith("IceProd dataset")]
    heartbeats = [ln for ln in lines if ln.startswith("Still waiting, no change in the last 0:30:00")]
    assert len(progress_lines) == 1, lines
    assert len(heartbeats) == (29 * poll) // HEARTBEAT_SECONDS == 4, lines
    assert len(lines) == 5


def test_a_change_logs_at_once_and_restarts_the_heartbeat() -> None:
    state = WaitState()
    assert progress_line(jobs_progress(0), state, 0.0) is not None
    assert progress_line(jobs_progress(0), state, 600.0) is None
    assert progress_line(jobs_progress(1), state, 1200.0) is not None
    assert progress_line(jobs_progress(1), state, 1200.0 + HEARTBEAT_SECONDS - 1) is None
    assert progress_line(jobs_progress(1), state, 1200.0 + HEARTBEAT_SECONDS).startswith("Still waiting")
    assert progress_line(jobs_progress(1), state, 1200.0 + HEARTBEAT_SECONDS + 1, force=True) is not None


def test_percentage_counts_jobs_like_the_line() -> None:
    p = jobs_progress(25)
    state = WaitState()
    evaluate(p, WaitOptions(), state, 0.0)
    line = describe_progress(p, state, 0.0)
    assert "jobs 25/100 complete (25.0%)" in line
    assert p.percent_complete == 25.0  # tasks are 50/275 complete: not what the line shows


def test_eta_unknown_only_before_a_job_finished_then_never_unknown() -> None:
    state, opts = WaitState(), WaitOptions()
    evaluate(jobs_progress(0), opts, state, 0.0)
    assert "ETA unknown (no job finished yet)" in describe_progress(jobs_progress(0), state, 0.0)
    evaluate(jobs_progress(10), opts, state, 1000.0)  # 10 jobs in 1000 s -> 90 left -> 9000 s
    assert "ETA 2:30:00" in describe_progress(jobs_progress(10), state, 1000.0)
    # a long pause: the ETA stays known and rises only gradually
    previous = state.eta_at(1000.0)
    for minute in range(1, 240):
        now = 1000.0 + 60 * minute
        evaluate(jobs_progress(10), opts, state, now)
        eta = state.eta_at(now)
        assert eta is not None
        assert previous is not None
        assert eta <= max(previous - 60, 0) * 1.25 + 60 + 1e-6  # no big jumps backwards
        previous = eta
        assert "unknown" not in describe_progress(jobs_progress(10), state, now)


def test_eta_is_smoothed_over_the_window_not_the_last_poll() -> None:
    state, opts = WaitState(), WaitOptions()
    evaluate(jobs_progress(0), opts, state, 0.0)
    for i in range(1, 11):  # one job per 100 s
        evaluate(jobs_progress(i), opts, state, 100.0 * i)
    steady = state.eta_at(1000.0)
    assert steady == pytest.approx(9000.0, rel=0.01)
    evaluate(jobs_progress(30), opts, state, 1010.0)  # a burst of 20 jobs in 10 s
    # the window rate is 30 jobs / 1010 s, not 20 jobs / 10 s
    assert state.eta_at(1010.0) == pytest.approx(70 / (30 / 1010.0), rel=0.01)


def test_wait_state_round_trips_with_the_log_bookkeeping() -> None:
    state = WaitState()
    evaluate(jobs_progress(0), WaitOptions(), state, 0.0)
    evaluate(jobs_progress(3), WaitOptions(), state, 30.0)
    progress_line(jobs_progress(3), state, 30.0)
    again = WaitState.from_dict(state.to_dict())
    assert again == state
    assert progress_line(jobs_progress(3), again, 60.0) is None


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
