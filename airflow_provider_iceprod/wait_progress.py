"""Progress lines of a wait: what the log shows after a poll, with the ETA (see ``docs/waiting.md``).

A line comes when the status or a job or task count changes, and otherwise as a heartbeat every
:data:`HEARTBEAT_SECONDS`. The ETA itself is kept by :class:`~airflow_provider_iceprod.waiting.WaitState`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_iceprod.models import DatasetProgress
    from airflow_provider_iceprod.waiting import WaitState

#: Seconds between "still waiting" heartbeat lines while nothing changes. A progress line is logged
#: whenever the status or a job or task count changes, and otherwise only this often.
HEARTBEAT_SECONDS = 30 * 60


def dataset_label(progress: DatasetProgress) -> str:
    number = f"{progress.dataset} " if progress.dataset else ""
    return f"IceProd dataset {number}({progress.dataset_id})"


def counts_text(counts: Mapping[str, int]) -> str:
    if not counts:
        return "{}"
    return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + "}"


# -------------------------------------------------------------------------------------------- progress


def _format_eta(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def eta_seconds(progress: DatasetProgress, state: WaitState, now: float | None = None) -> float | None:
    """Seconds until all jobs are complete, or None before any job finished during the wait."""
    del progress  # the ETA is kept up to date by evaluate(); kept for callers' convenience
    return state.eta_at(time.time() if now is None else now)


def describe_progress(progress: DatasetProgress, state: WaitState, now: float | None = None) -> str:
    """One log line: ``jobs 3/10 complete (30.0%), tasks {...}, ETA 0:12:00``."""
    jobs = f"jobs {progress.jobs_complete}/{progress.jobs_total} complete ({progress.percent_complete:.1f}%)"
    if progress.task_counts:
        tasks = f"tasks {counts_text(progress.task_counts)}"
    else:
        tasks = "no tasks materialized yet"
    eta = state.eta_at(now if now is not None else time.time()) if state.eta else None
    if eta is not None:
        eta_text = f"ETA {_format_eta(eta)}"
    elif progress.jobs_complete and state.samples:
        eta_text = "ETA unknown (no job finished since the wait began)"
    else:
        eta_text = "ETA unknown (no job finished yet)"
    truncated = ", truncated" if progress.truncated else ""
    return f"{dataset_label(progress)} [{progress.status or '?'}{truncated}]: {jobs}, {tasks}, {eta_text}"


def _progress_key(progress: DatasetProgress) -> str:
    return (
        f"{progress.status}|{progress.truncated}|{progress.jobs_total}|"
        f"{counts_text(progress.job_counts)}|{counts_text(progress.task_counts)}"
    )


def progress_line(
    progress: DatasetProgress,
    state: WaitState,
    now: float | None = None,
    *,
    force: bool = False,
    heartbeat: float = HEARTBEAT_SECONDS,
) -> str | None:
    """The line to log after a poll, or None: lines come on changes, plus a heartbeat.

    A line is due when the status or a count changed since the last line (or ``force``, e.g.
    the wait ends), and otherwise every ``heartbeat`` seconds as "still waiting, no change ...".
    """
    now = time.time() if now is None else now
    key = _progress_key(progress)
    if force or key != state.last_key:
        state.last_key, state.last_logged = key, now
        return describe_progress(progress, state, now)
    if now - state.last_logged >= heartbeat:
        quiet = _format_eta(now - state.last_logged)
        state.last_logged = now
        return f"Still waiting, no change in the last {quiet}: {describe_progress(progress, state, now)}"
    return None
