"""Progress lines: one per change plus a heartbeat; jobs-based percentage; a steady ETA."""

from __future__ import annotations

import logging

import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout

from airflow_provider_iceprod.hooks.iceprod import IceProdHook
from airflow_provider_iceprod.models import DatasetProgress
from airflow_provider_iceprod.testing import LocalIceProd
from airflow_provider_iceprod.waiting import (
    HEARTBEAT_SECONDS,
    WaitOptions,
    WaitState,
    describe_progress,
    evaluate,
    progress_line,
    wait_for_dataset,
)

DS = "0123456789abcdef0123456789abcdef"
ONE_TASK = {
    "version": 3.2,
    "tasks": [{"name": "generate", "trays": [{"modules": [{"src": "/usr/bin/true"}]}]}],
}


def progress(jobs_complete: int, jobs: int = 100, status: str = "processing") -> DatasetProgress:
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
    dataset_id = ip.create_dataset(ONE_TASK, jobs_submitted=2, materialize=True)
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
    assert progress_line(progress(0), state, 0.0) is not None
    assert progress_line(progress(0), state, 600.0) is None
    assert progress_line(progress(1), state, 1200.0) is not None
    assert progress_line(progress(1), state, 1200.0 + HEARTBEAT_SECONDS - 1) is None
    assert progress_line(progress(1), state, 1200.0 + HEARTBEAT_SECONDS).startswith("Still waiting")
    assert progress_line(progress(1), state, 1200.0 + HEARTBEAT_SECONDS + 1, force=True) is not None


def test_percentage_counts_jobs_like_the_line() -> None:
    p = progress(25)
    state = WaitState()
    evaluate(p, WaitOptions(), state, 0.0)
    line = describe_progress(p, state, 0.0)
    assert "jobs 25/100 complete (25.0%)" in line
    assert p.percent_complete == 25.0  # tasks are 50/275 complete: not what the line shows


def test_eta_unknown_only_before_a_job_finished_then_never_unknown() -> None:
    state, opts = WaitState(), WaitOptions()
    evaluate(progress(0), opts, state, 0.0)
    assert "ETA unknown (no job finished yet)" in describe_progress(progress(0), state, 0.0)
    evaluate(progress(10), opts, state, 1000.0)  # 10 jobs in 1000 s -> 90 left -> 9000 s
    assert "ETA 2:30:00" in describe_progress(progress(10), state, 1000.0)
    # a long pause: the ETA stays known and rises only gradually
    previous = state.eta_at(1000.0)
    for minute in range(1, 240):
        now = 1000.0 + 60 * minute
        evaluate(progress(10), opts, state, now)
        eta = state.eta_at(now)
        assert eta is not None
        assert previous is not None
        assert eta <= max(previous - 60, 0) * 1.25 + 60 + 1e-6  # no big jumps backwards
        previous = eta
        assert "unknown" not in describe_progress(progress(10), state, now)


def test_eta_is_smoothed_over_the_window_not_the_last_poll() -> None:
    state, opts = WaitState(), WaitOptions()
    evaluate(progress(0), opts, state, 0.0)
    for i in range(1, 11):  # one job per 100 s
        evaluate(progress(i), opts, state, 100.0 * i)
    steady = state.eta_at(1000.0)
    assert steady == pytest.approx(9000.0, rel=0.01)
    evaluate(progress(30), opts, state, 1010.0)  # a burst of 20 jobs in 10 s
    # the window rate is 30 jobs / 1010 s, not 20 jobs / 10 s
    assert state.eta_at(1010.0) == pytest.approx(70 / (30 / 1010.0), rel=0.01)


def test_wait_state_round_trips_with_the_log_bookkeeping() -> None:
    state = WaitState()
    evaluate(progress(0), WaitOptions(), state, 0.0)
    evaluate(progress(3), WaitOptions(), state, 30.0)
    progress_line(progress(3), state, 30.0)
    again = WaitState.from_dict(state.to_dict())
    assert again == state
    assert progress_line(progress(3), again, 60.0) is None
