"""Wait decisions that once survived a one-line mutation of the provider (issue 18)."""

from __future__ import annotations

from airflow_provider_iceprod.models import DatasetProgress
from airflow_provider_iceprod.waiting import WaitOptions, WaitState, describe_progress, eta_seconds, evaluate

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


def test_eta_forgets_the_old_rate_when_counts_go_down() -> None:
    """Complete counts that drop (tasks reset in IceProd) make the old rate meaningless: the ETA
    is unknown until two new samples exist, then it comes from the new samples only."""
    options, state = WaitOptions(), WaitState()
    for t, done in ((0.0, 0), (10.0, 10), (20.0, 20)):  # 1 task/s
        evaluate(_progress(done), options, state, t)
    assert eta_seconds(_progress(20), state) == 80.0

    evaluate(_progress(5), options, state, 30.0)  # a reset: 20 -> 5
    assert eta_seconds(_progress(5), state) is None
    assert "ETA unknown" in describe_progress(_progress(5), state)

    evaluate(_progress(15), options, state, 130.0)  # 10 tasks in 100 s: 0.1 task/s
    assert eta_seconds(_progress(15), state) == 850.0
    assert "ETA 0:14:10" in describe_progress(_progress(15), state)


def test_eta_from_the_window_of_samples() -> None:
    """The rate is measured over the whole sample window (first to last), not the last step."""
    options, state = WaitOptions(), WaitState()
    for t, done in ((0.0, 0), (10.0, 20), (40.0, 40)):  # 40 tasks in 40 s; the last step is slower
        evaluate(_progress(done), options, state, t)
    assert eta_seconds(_progress(40), state) == 60.0
