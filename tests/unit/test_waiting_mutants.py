"""Wait decisions that once survived a one-line mutation of the provider (issue 18)."""

from __future__ import annotations

import time

import pytest
from wait_helpers import DS
from wait_helpers import progress as _p

from airflow_provider_iceprod.models import DatasetProgress
from airflow_provider_iceprod.wait_progress import eta_seconds
from airflow_provider_iceprod.waiting import WaitOptions, WaitState, evaluate


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


# ------------------------------------- found by the 2026-11-29 rerun of `make mutation` (waiting.py)

T0 = 1_764_400_000.0  # a real clock reading: a verdict must depend on durations, not on the epoch


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("target_states", ("done",)),
        ("on_suspended", "retry"),
        ("stall_polls", 0),
        ("poll_interval", "5"),
        ("poll_interval", -1),
        ("tolerate_errors", -1),
        ("tolerate_errors", True),
        ("tolerate_errors", 1.5),
        ("on_outage", "retry"),
    ],
)
def test_a_bad_wait_option_names_itself_and_the_bad_value(option: str, value: object) -> None:
    with pytest.raises(ValueError) as info:
        WaitOptions(**{option: value})  # type: ignore[arg-type]
    assert str(info.value).startswith(f"{option} must be ")
    assert repr(value) in str(info.value) or repr(list(value)) in str(info.value)  # type: ignore[call-overload]


def test_a_garbled_wait_state_says_so_and_a_half_eta_is_dropped() -> None:
    with pytest.raises(ValueError, match=r"^wait_state is not a valid WaitState dict: "):
        WaitState.from_dict({"polls": "many"})
    state = WaitState.from_dict({"eta": [T0]})  # not a [time, seconds] pair: forgotten, not a crash
    assert state.eta == () and state.eta_at(T0 + 10) is None
    state.samples = ((T0, 0.0), (T0 + 100, 10.0))
    state.update_eta(_progress(10), T0 + 100)
    assert state.eta_at(T0 + 100) == pytest.approx(900.0)


def test_the_rate_counts_the_jobs_done_during_the_wait_up_to_now() -> None:
    state = WaitState(samples=[[T0, 5.0], [T0 + 100, 15.0]])  # 5 jobs were complete before the wait
    assert state.rate() == pytest.approx(0.1)
    assert state.rate(T0 + 200) == pytest.approx(0.05)  # a pause slows the rate down
    assert state.rate(T0 + 50) == pytest.approx(0.1)  # never measured to before the last sample


def test_the_eta_is_the_remaining_jobs_at_the_rate_up_to_now() -> None:
    state = WaitState(samples=[[T0, 0.0], [T0 + 100, 10.0]])
    state.update_eta(_progress(10), T0 + 200)  # 90 jobs left at 10 jobs per 200 s
    assert state.eta == (T0 + 200, pytest.approx(1800.0))
    done = WaitState(samples=[[T0, 0.0], [T0 + 100, 100.0]])
    done.update_eta(_progress(100), T0 + 100)
    assert done.eta_at(T0 + 100) == 0.0  # nothing left: no time left


def test_the_eta_counts_down_and_stops_at_zero() -> None:
    state = WaitState(eta=[T0 + 50, 100.0])
    assert state.eta_at(T0 + 80) == pytest.approx(70.0)
    assert state.eta_at(T0 + 40) == pytest.approx(100.0)  # a clock step back does not add time
    assert state.eta_at(T0 + 500) == 0.0


def test_an_eta_rises_by_a_quarter_of_the_counted_down_one_or_a_minute() -> None:
    slow = [[T0, 0.0], [T0 + 100, 1.0]]  # 99 jobs left at 1 per 150 s: a far higher raw ETA
    state = WaitState(samples=[list(s) for s in slow], eta=[T0 + 50, 1000.0])
    state.update_eta(_progress(1), T0 + 150)  # counted down to 900; may rise by 225
    assert state.eta == (T0 + 150, pytest.approx(1125.0))
    state = WaitState(samples=[list(s) for s in slow], eta=[T0 + 50, 100.0])
    state.update_eta(_progress(1), T0 + 150)  # counted down to 0; may rise by a minute
    assert state.eta == (T0 + 150, pytest.approx(60.0))


def test_job_counts_alone_feed_the_eta() -> None:
    """A poll with job counts but no task counts still records progress."""
    state = WaitState()
    for i, complete in enumerate((0, 10)):
        jobs = {"processing": 100 - complete, "complete": complete} if complete else {"processing": 100}
        evaluate(_p(jobs=jobs, jobs_submitted=100), WaitOptions(), state, T0 + 100 * i)
    assert state.samples == ((T0, 0.0), (T0 + 100, 10.0))
    assert state.eta_at(T0 + 100) == pytest.approx(900.0)


def test_a_one_job_dataset_succeeds_on_its_job_count() -> None:
    for submitted in (0, 1):
        verdict = evaluate(_p(jobs={"complete": 1}, jobs_submitted=submitted), WaitOptions(), WaitState(), T0)
        assert (verdict.done, verdict.outcome, verdict.status) == (True, "success", "success")
        assert verdict.message == (
            f"IceProd dataset 7 ({DS}): all 1 jobs are complete; IceProd will mark it complete on its "
            "next pass (status now 'processing')."
        )


def test_a_complete_dataset_with_tasks_to_rerun_counts_idle_and_queued_ones() -> None:
    rerun = _p("complete", jobs={"processing": 4}, tasks={"idle": 2, "queued": 1, "complete": 5})
    verdict = evaluate(rerun, WaitOptions(), WaitState(), T0)
    assert (verdict.done, verdict.outcome) == (False, "running")
    assert "is complete but 3 task(s) still run" in verdict.message
    assert verdict.message.endswith(
        "(after a hard_reset, IceProd re-runs the tasks of a complete dataset); waiting for them."
    )


def test_jobs_added_to_a_complete_dataset_tell_the_user_to_submit_a_new_one() -> None:
    added = _p("complete", jobs={"complete": 4}, tasks={"complete": 8}, jobs_submitted=6)
    verdict = evaluate(added, WaitOptions(), WaitState(), T0)
    assert (verdict.done, verdict.outcome, verdict.status) == (True, "unreachable", "failed")
    assert "4 of 6 jobs" in verdict.message and verdict.message.endswith("Submit a new dataset for them.")


def _materialization(missing: int) -> DatasetProgress:
    return _p(jobs={"complete": 4 - missing}, tasks={"complete": 8 - 2 * missing}, jobs_submitted=4)


def test_a_failed_materialization_stalls_after_an_hour_of_the_wait_not_before() -> None:
    from airflow_provider_iceprod.waiting import MATERIALIZATION_STALL_SECONDS

    options = WaitOptions(stall_polls=3)
    state = WaitState()
    for at in (T0, T0 + 1800, T0 + MATERIALIZATION_STALL_SECONDS - 1):  # three polls, under an hour
        verdict = evaluate(_materialization(1), options, state, at)
        assert not verdict.done, verdict.message
    # an hour, but fewer than stall_polls polls seen: not yet
    few = WaitState(idle_since=T0)
    assert not evaluate(_materialization(1), options, few, T0 + 2 * MATERIALIZATION_STALL_SECONDS).done
    # the stall_polls-th poll, an hour after the first: stalled
    state = WaitState()
    for at in (T0, T0 + 1800):
        assert not evaluate(_materialization(1), options, state, at).done
    verdict = evaluate(_materialization(1), options, state, T0 + MATERIALIZATION_STALL_SECONDS + 60)
    assert (verdict.done, verdict.outcome, verdict.status) == (True, "stalled", "failed")
    assert verdict.message == (
        f"IceProd dataset 7 ({DS}) stalled: 1 of 4 jobs were never created and nothing has been waiting, "
        "queued, processing or failed for 3660 s (tasks {complete: 6}, jobs {complete: 3}). IceProd's "
        "materialization failed, for example on a bad depends."
    )


def test_no_materialization_stall_without_missing_jobs_or_from_stale_counts() -> None:
    from airflow_provider_iceprod.waiting import MATERIALIZATION_STALL_SECONDS

    options = WaitOptions(stall_polls=1)
    quiet = _p(jobs={"processing": 4}, tasks={"complete": 4}, jobs_submitted=4)  # all jobs exist
    stale = WaitState()
    fresh_jobs = WaitState()
    for at in (T0, T0 + MATERIALIZATION_STALL_SECONDS, T0 + 2 * MATERIALIZATION_STALL_SECONDS):
        assert not evaluate(quiet, options, WaitState(idle_since=T0, polls=5), at).done
        verdict = evaluate(_materialization(1), options, stale, at, counts_fresh=False, jobs_fresh=True)
        assert not verdict.done
        verdict = evaluate(_materialization(1), options, fresh_jobs, at, counts_fresh=True, jobs_fresh=False)
        assert not verdict.done
    assert stale.idle_since is None and fresh_jobs.idle_since is None


# ------------------------------ found by the 2026-11-29 run of `make mutation` (wait_progress.py)


def test_a_progress_line_shows_status_truncation_counts_and_eta() -> None:
    from airflow_provider_iceprod.wait_progress import describe_progress

    state = WaitState(samples=[[T0, 0.0], [T0 + 100, 1.0]], eta=[T0 + 100, 900.0])
    truncated = _p(jobs={"complete": 1, "processing": 3}, tasks={"complete": 2, "idle": 6}, truncated=True)
    assert describe_progress(truncated, state, T0 + 400) == (
        f"IceProd dataset 7 ({DS}) [processing, truncated]: jobs 1/4 complete (25.0%), "
        "tasks {complete: 2, idle: 6}, ETA 0:10:00"
    )
    unknown = _p("", jobs={"complete": 1, "processing": 3})
    assert describe_progress(unknown, WaitState(samples=[[T0, 1.0]]), T0) == (
        f"IceProd dataset 7 ({DS}) [?]: jobs 1/4 complete (25.0%), no tasks materialized yet, "
        "ETA unknown (no job finished since the wait began)"
    )
    assert describe_progress(_p(), WaitState(), T0) == (
        f"IceProd dataset 7 ({DS}) [processing]: jobs 0/4 complete (0.0%), no tasks materialized yet, "
        "ETA unknown (no job finished yet)"
    )


def test_a_dataset_without_a_known_number_is_named_by_its_id() -> None:
    from airflow_provider_iceprod.wait_progress import dataset_label

    nameless = DatasetProgress(DS, 0, "processing", False, 4, 8)
    assert dataset_label(nameless) == f"IceProd dataset ({DS})"
    verdict = evaluate(DatasetProgress(DS, 0, "errors", False, 4, 8), WaitOptions(), WaitState(), T0)
    assert verdict.message.startswith(f"IceProd dataset ({DS}) is in status 'errors': jobs {{}}, tasks {{}}.")


def test_the_eta_is_read_at_the_given_time_or_now() -> None:
    state = WaitState(eta=[T0, 100.0])
    assert eta_seconds(_p(), state, T0 + 30) == pytest.approx(70.0)
    assert eta_seconds(_p(), state) == 0.0  # T0 is long past by the real clock
    started = time.time()
    fresh = WaitState(eta=[started, 3600.0])
    assert 3500 < eta_seconds(_p(), fresh) <= 3600  # type: ignore[operator]
    from airflow_provider_iceprod.wait_progress import describe_progress, progress_line

    line = describe_progress(_p(), fresh)  # 1:00:00 or a few seconds less by the real clock
    assert "ETA 0:59:" in line or line.endswith("ETA 1:00:00")
    line = progress_line(_p(jobs={"processing": 4}), fresh)
    assert line is not None and "ETA " in line
    assert progress_line(_p(jobs={"processing": 4}), fresh) is None  # nothing changed since


def test_progress_lines_use_the_poll_time_for_the_eta() -> None:
    from airflow_provider_iceprod.wait_progress import HEARTBEAT_SECONDS, progress_line

    state = WaitState(eta=[T0, 7200.0])
    line = progress_line(_p(jobs={"processing": 4}), state, T0 + 600)
    assert line is not None and line.endswith("ETA 1:50:00")
    heartbeat = progress_line(_p(jobs={"processing": 4}), state, T0 + 600 + HEARTBEAT_SECONDS)
    assert heartbeat is not None
    assert heartbeat.startswith("Still waiting, no change in the last 0:30:00: IceProd dataset 7")
    assert heartbeat.endswith("ETA 1:20:00")


def test_a_change_in_the_job_counts_or_the_task_counts_alone_logs_a_line() -> None:
    from airflow_provider_iceprod.wait_progress import progress_line

    state = WaitState()
    tasks = {"queued": 4, "idle": 4}
    assert progress_line(_p(jobs={"processing": 4}, tasks=tasks), state, T0) is not None
    assert progress_line(_p(jobs={"processing": 4}, tasks=tasks), state, T0 + 60) is None
    moved_jobs = _p(jobs={"processing": 3, "complete": 1}, tasks=tasks)
    assert progress_line(moved_jobs, state, T0 + 120) is not None
    moved_tasks = _p(jobs={"processing": 3, "complete": 1}, tasks={"queued": 3, "processing": 1, "idle": 4})
    assert progress_line(moved_tasks, state, T0 + 180) is not None


# -------------------------------- found by the 2026-11-29 run of `make mutation` (wait_events.py)


def test_a_bad_trigger_event_is_shown_in_the_error() -> None:
    from airflow.sdk.exceptions import AirflowException

    from airflow_provider_iceprod.wait_events import event_result

    with pytest.raises(
        AirflowException, match=r"^IceProd wait resumed without a valid trigger event \(got None\)"
    ):
        event_result(None)
    odd = {"status": "finished", "dataset_id": DS}
    with pytest.raises(AirflowException) as info:
        event_result(odd)
    assert str(info.value) == f"IceProd wait resumed with an unrecognised trigger event: {odd!r}"
    with pytest.raises(AirflowException, match=r"malformed 'progress': \[1, 2\]"):
        event_result({"status": "success", "dataset_id": DS, "progress": [1, 2]})


def test_a_timeout_or_failure_event_keeps_its_message_or_names_the_dataset() -> None:
    from airflow.sdk.exceptions import AirflowSensorTimeout

    from airflow_provider_iceprod.exceptions import IceProdDatasetFailedError
    from airflow_provider_iceprod.wait_events import event_result

    with pytest.raises(AirflowSensorTimeout, match=r"^the deadline passed$"):
        event_result({"status": "timeout", "dataset_id": DS, "message": "the deadline passed"})
    with pytest.raises(AirflowSensorTimeout, match=rf"^IceProd dataset {DS}: timeout$"):
        event_result({"status": "timeout", "dataset_id": DS})
    with pytest.raises(IceProdDatasetFailedError, match=rf"^IceProd dataset {DS}: failed$"):
        event_result({"status": "failed", "dataset_id": DS, "message": None})
