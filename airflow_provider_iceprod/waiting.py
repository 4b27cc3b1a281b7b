"""Deciding when a waited-on IceProd dataset is done (the synchronous loop is in ``wait_loop``).

The decision logic here is pure: :func:`evaluate` looks at one poll's :class:`DatasetProgress`
and a small mutable :class:`WaitState` (stall counter, rate samples for the ETA) and returns a
:class:`Verdict`. The sensor (poke and reschedule modes), the deferrable trigger and the operators'
non-deferrable wait all use it, so every mode decides the same way.

How the outcome is decided (see ``docs/waiting.md``):

* **success**: the status is one of ``target_states`` (default ``complete``). For ``complete``
  there is a faster, cron-independent check too: ``job_counts`` is exactly ``{"complete": N}`` with
  ``N >= jobs_submitted`` (any ``N > 0`` for a truncated dataset, which completes when its
  existing jobs finish).
* **errors**: status ``errors`` fails at once.
* **suspended**: ``on_suspended`` decides: ``fail``, ``wait`` (keep waiting) or ``timeout`` (end
  the wait as a timeout, like the deadline passing; with ``soft_fail`` the task is skipped).
* **stalled**: IceProd never reports this itself. A failed task leaves its dependants ``idle``
  forever, so the job and the dataset stay ``processing``. When the task counts show failed tasks
  and nothing waiting, queued or processing for ``stall_polls`` consecutive polls, the wait fails.
* Anything else (``processing``, an empty or unknown status) is still running.

No Airflow database access happens here; nothing here sees a token.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_iceprod.exceptions import (
    IceProdDatasetFailedError,
    IceProdError,
    IceProdPermissionError,
)
from airflow_provider_iceprod.models import DATASET_STATUSES, DatasetProgress

if TYPE_CHECKING:
    pass

ON_SUSPENDED_CHOICES = ("fail", "wait", "timeout")
EVENT_STATUSES = ("success", "failed", "timeout", "error")
#: How many rate samples a :class:`WaitState` keeps for the ETA (a sliding window).
MAX_RATE_SAMPLES = 12


# --------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class WaitOptions:
    """What to wait for and how patiently. Plain values only, so it crosses into triggers.

    Attributes:
        target_states: dataset statuses that end the wait successfully.
        on_suspended: ``fail``, ``wait`` or ``timeout`` when the dataset is ``suspended`` (and
            ``suspended`` is not a target state).
        stall_polls: consecutive polls (with task counts) showing failed tasks and nothing waiting,
            queued or processing before the wait fails as stalled.
        poll_interval: seconds between polls.
        tolerate_errors: consecutive polls that may fail with a transient error (after the hook's
            own retries) before the wait gives up.
    """

    target_states: tuple[str, ...] = ("complete",)
    on_suspended: str = "fail"
    stall_polls: int = 3
    poll_interval: float = 60.0
    tolerate_errors: int = 3

    def __post_init__(self) -> None:
        states = self.target_states
        if isinstance(states, str):
            states = (states,)
        states = tuple(states)
        object.__setattr__(self, "target_states", states)
        unknown = [s for s in states if s not in DATASET_STATUSES]
        if not states or unknown:
            raise ValueError(
                f"target_states must be a non-empty subset of {list(DATASET_STATUSES)}, got {list(states)!r}"
            )
        if self.on_suspended not in ON_SUSPENDED_CHOICES:
            raise ValueError(
                f"on_suspended must be one of {list(ON_SUSPENDED_CHOICES)}, got {self.on_suspended!r}"
            )
        if (
            isinstance(self.stall_polls, bool)
            or not isinstance(self.stall_polls, int)
            or self.stall_polls < 1
        ):
            raise ValueError(f"stall_polls must be an integer >= 1, got {self.stall_polls!r}")
        if isinstance(self.poll_interval, bool) or not isinstance(self.poll_interval, (int, float)):
            raise ValueError(f"poll_interval must be a number of seconds, got {self.poll_interval!r}")
        if self.poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {self.poll_interval!r}")
        object.__setattr__(self, "poll_interval", float(self.poll_interval))
        if (
            isinstance(self.tolerate_errors, bool)
            or not isinstance(self.tolerate_errors, int)
            or self.tolerate_errors < 0
        ):
            raise ValueError(f"tolerate_errors must be an integer >= 0, got {self.tolerate_errors!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_states": list(self.target_states),
            "on_suspended": self.on_suspended,
            "stall_polls": self.stall_polls,
            "poll_interval": self.poll_interval,
            "tolerate_errors": self.tolerate_errors,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> WaitOptions:
        data = dict(data or {})
        known = {"target_states", "on_suspended", "stall_polls", "poll_interval", "tolerate_errors"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown wait option(s): {unknown}")
        if "target_states" in data:
            states = data["target_states"]
            data["target_states"] = (states,) if isinstance(states, str) else tuple(states)
        return cls(**data)


# ----------------------------------------------------------------------------------------------- state


@dataclass
class WaitState:
    """What a wait remembers between polls; plain values so it survives serialization.

    ``stall_count``: consecutive polls that looked stalled. ``samples``: ``[time, tasks_complete]``
    pairs (a sliding window) for the ETA. ``polls``: polls that had task counts. ``error_count``:
    consecutive polls that failed with a transient error.
    """

    stall_count: int = 0
    samples: list[list[float]] = field(default_factory=list)
    polls: int = 0
    error_count: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "stall_count": self.stall_count,
            "samples": [[float(t), float(c)] for t, c in self.samples],
            "polls": self.polls,
            "error_count": self.error_count,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> WaitState:
        data = data or {}
        try:
            samples = [[float(t), float(c)] for t, c in data.get("samples") or []]
            return cls(
                stall_count=int(data.get("stall_count", 0)),
                samples=samples[-MAX_RATE_SAMPLES:],
                polls=int(data.get("polls", 0)),
                error_count=int(data.get("error_count", 0)),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"wait_state is not a valid WaitState dict: {exc}") from None

    def record_sample(self, now: float, tasks_complete: int) -> None:
        if self.samples and self.samples[-1][1] > tasks_complete:
            self.samples.clear()  # counts went down (a reset): the old rate means nothing
        self.samples.append([float(now), float(tasks_complete)])
        del self.samples[:-MAX_RATE_SAMPLES]

    def rate(self) -> float | None:
        """Tasks completed per second over the sample window, or None when unknown."""
        if len(self.samples) < 2:
            return None
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        if t1 <= t0 or c1 <= c0:
            return None
        return (c1 - c0) / (t1 - t0)


# --------------------------------------------------------------------------------------------- verdict


@dataclass(frozen=True)
class Verdict:
    """The decision after one poll.

    ``outcome``: ``running``, ``success``, ``errors``, ``stalled``, ``suspended``, ``unreachable``.
    ``status`` is what a trigger event reports: ``running``, ``success``, ``failed`` or ``timeout``.
    """

    done: bool
    outcome: str
    message: str
    status: str = "running"


def _label(progress: DatasetProgress) -> str:
    number = f"{progress.dataset} " if progress.dataset else ""
    return f"IceProd dataset {number}({progress.dataset_id})"


def _counts_text(counts: Mapping[str, int]) -> str:
    if not counts:
        return "{}"
    return "{" + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) + "}"


def jobs_all_complete(progress: DatasetProgress) -> bool:
    """The cron-independent success check: ``job_counts`` is exactly ``{"complete": N}``."""
    counts = {k: v for k, v in progress.job_counts.items() if v}
    if set(counts) != {"complete"}:
        return False
    n = counts["complete"]
    if progress.truncated:
        return n > 0
    return n >= max(progress.jobs_submitted, 1)


def looks_stalled(progress: DatasetProgress) -> bool:
    """Failed tasks and nothing waiting, queued or processing."""
    return progress.tasks_failed > 0 and progress.tasks_active == 0


def evaluate(
    progress: DatasetProgress,
    options: WaitOptions,
    state: WaitState,
    now: float,
    *,
    counts_fresh: bool = True,
    jobs_fresh: bool | None = None,
) -> Verdict:
    """Decide from one poll. Updates ``state`` (stall counter, ETA samples).

    ``counts_fresh=False`` says the task counts in ``progress`` are not from this poll (the shared
    poller refreshes counts for a few datasets per interval): then the stall counter and the ETA
    samples are left alone. ``jobs_fresh`` (default: ``counts_fresh``) says the same of the job
    counts, which only the cron-independent success check uses.
    """
    jobs_fresh = counts_fresh if jobs_fresh is None else jobs_fresh
    status = progress.status
    label = _label(progress)
    if counts_fresh:
        state.polls += 1
        if progress.task_counts:
            state.record_sample(now, progress.tasks_complete)

    if status in options.target_states:
        state.stall_count = 0
        return Verdict(True, "success", f"{label} reached status {status!r}.", "success")
    if jobs_fresh and "complete" in options.target_states and jobs_all_complete(progress):
        state.stall_count = 0
        return Verdict(
            True,
            "success",
            f"{label}: all {progress.jobs_complete} jobs are complete"
            + (" (truncated dataset)" if progress.truncated else "")
            + f"; IceProd will mark it complete on its next pass (status now {status!r}).",
            "success",
        )
    if status == "complete":
        return Verdict(
            True,
            "unreachable",
            f"{label} is complete, so it can never reach the target states {list(options.target_states)}.",
            "failed",
        )
    if status == "errors":
        return Verdict(
            True,
            "errors",
            f"{label} is in status 'errors': jobs {_counts_text(progress.job_counts)}, "
            f"tasks {_counts_text(progress.task_counts)}. Retry its failed tasks or reset it in IceProd.",
            "failed",
        )
    if status == "suspended" and options.on_suspended != "wait":
        why = (
            f"{label} is suspended (by a user, or by IceProd when only suspended work was left); "
            f"on_suspended={options.on_suspended!r}. Resume it in IceProd to continue."
        )
        if options.on_suspended == "timeout":
            return Verdict(True, "suspended", why, "timeout")
        return Verdict(True, "suspended", why, "failed")

    if counts_fresh:
        if looks_stalled(progress):
            state.stall_count += 1
        else:
            state.stall_count = 0
        if state.stall_count >= options.stall_polls:
            return Verdict(
                True,
                "stalled",
                f"{label} stalled: {progress.tasks_failed} failed task(s) and nothing waiting, queued or "
                f"processing for {state.stall_count} consecutive polls (tasks "
                f"{_counts_text(progress.task_counts)}, jobs {_counts_text(progress.job_counts)}). "
                "Dependants of a failed task stay idle until it is reset; retry the failed tasks.",
                "failed",
            )
    return Verdict(False, "running", f"{label} is {status or 'in an unknown status'}.", "running")


def status_ends_wait(status: str, options: WaitOptions) -> bool:
    """Whether a dataset status alone ends a wait with these options (no counts needed)."""
    if status in options.target_states or status in ("complete", "errors"):
        return True
    return status == "suspended" and options.on_suspended != "wait"


def with_failed_task_names(verdict: Verdict, counts_by_name: Mapping[str, Mapping[str, int]]) -> Verdict:
    """Add the names of the failed tasks (from ``task_counts/name_status``) to a stall verdict."""
    failed = {name: int(c.get("failed", 0)) for name, c in counts_by_name.items() if c.get("failed")}
    if not failed:
        return verdict
    names = ", ".join(f"{name} ({n})" for name, n in sorted(failed.items()))
    return Verdict(verdict.done, verdict.outcome, f"{verdict.message} Failed tasks: {names}.", verdict.status)


# -------------------------------------------------------------------------------------------- progress


def _format_eta(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


def eta_seconds(progress: DatasetProgress, state: WaitState) -> float | None:
    rate = state.rate()
    if rate is None:
        return None
    total = progress.tasks_submitted or sum(progress.task_counts.values())
    remaining = max(total - progress.tasks_complete, 0)
    return remaining / rate


def describe_progress(progress: DatasetProgress, state: WaitState, now: float | None = None) -> str:
    """One log line: ``jobs 3/10 complete, tasks {...}, 42.0%, ETA 0:12:00``."""
    jobs = f"jobs {progress.jobs_complete}/{progress.jobs_submitted} complete"
    if progress.task_counts:
        tasks = f"tasks {_counts_text(progress.task_counts)}"
    else:
        tasks = "no tasks materialized yet"
    eta = eta_seconds(progress, state)
    eta_text = f"ETA {_format_eta(eta)}" if eta is not None else "ETA unknown"
    truncated = ", truncated" if progress.truncated else ""
    return (
        f"{_label(progress)} [{progress.status or '?'}{truncated}]: {jobs}, {tasks}, "
        f"{progress.percent_complete:.1f}%, {eta_text}"
    )


# ---------------------------------------------------------------------------------------------- events


def make_event(
    status: str,
    dataset_id: str,
    *,
    outcome: str,
    message: str,
    progress: DatasetProgress | None = None,
    error_type: str | None = None,
) -> dict[str, Any]:
    """A trigger event / wait result: plain values only."""
    event: dict[str, Any] = {
        "status": status,
        "dataset_id": dataset_id,
        "outcome": outcome,
        "message": message,
        "progress": progress.as_dict() if progress is not None else None,
    }
    if error_type:
        event["error_type"] = error_type
    return event


def verdict_event(verdict: Verdict, progress: DatasetProgress) -> dict[str, Any]:
    return make_event(
        verdict.status,
        progress.dataset_id,
        outcome=verdict.outcome,
        message=verdict.message,
        progress=progress,
    )


def error_event(dataset_id: str, exc: BaseException) -> dict[str, Any]:
    """An event for an exception; keeps IceProd's text, names the exception type."""
    return make_event(
        "error",
        dataset_id,
        outcome="error",
        message=f"{type(exc).__name__}: {exc}",
        error_type=type(exc).__name__,
    )


def timeout_event(
    dataset_id: str, deadline: float, progress: DatasetProgress | None = None
) -> dict[str, Any]:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(deadline))
    return make_event(
        "timeout",
        dataset_id,
        outcome="timeout",
        message=f"Timed out waiting for IceProd dataset {dataset_id}: the deadline {when} passed.",
        progress=progress,
    )


def _error_class(name: object) -> type[IceProdError]:
    from airflow_provider_iceprod import exceptions

    cls = getattr(exceptions, str(name), None) if isinstance(name, str) else None
    if isinstance(cls, type) and issubclass(cls, IceProdError):
        return cls
    return IceProdError


def event_result(event: object) -> dict[str, Any]:
    """Check a trigger event handed to ``execute_complete``; return it when it is a success.

    Raises ``IceProdDatasetFailedError`` for failures, ``AirflowSensorTimeout`` for timeouts, the
    original IceProd exception type for error events, and ``AirflowException`` for ``None`` or
    anything that is not a well-formed event.
    """
    from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout

    if not isinstance(event, Mapping):
        raise AirflowException(f"IceProd wait resumed without a valid trigger event (got {event!r}).")
    status = event.get("status")
    dataset_id = event.get("dataset_id")
    message = event.get("message")
    if status not in EVENT_STATUSES or not isinstance(dataset_id, str) or not dataset_id:
        raise AirflowException(f"IceProd wait resumed with an unrecognised trigger event: {dict(event)!r}")
    if not isinstance(message, str):
        message = f"IceProd dataset {dataset_id}: {status}"
    if status == "success":
        progress = event.get("progress")
        if progress is not None and not isinstance(progress, Mapping):
            raise AirflowException(f"IceProd trigger event has a malformed 'progress': {progress!r}")
        return dict(event)
    if status == "timeout":
        raise AirflowSensorTimeout(message)
    if status == "failed":
        raise IceProdDatasetFailedError(message, dataset_id=dataset_id)
    raise _error_class(event.get("error_type"))(message)


# -------------------------------------------------------------------------------------------- failures


def not_visible_error(
    ref: object, exc: IceProdError, conn_id: str | None = None
) -> IceProdDatasetFailedError:
    """A clear, non-retryable failure for a dataset the token cannot read (403) or that is gone (404)."""
    via = f" with connection {conn_id!r}" if conn_id else ""
    hint = (
        "IceProd answers 403 both when the token may not read a dataset and when no such dataset exists; "
        "check the dataset id/number and that the connection's user may read it."
        if isinstance(exc, IceProdPermissionError)
        else "Check the dataset id or number."
    )
    return IceProdDatasetFailedError(
        f"IceProd dataset {ref} cannot be read{via}: {exc}. {hint}",
        dataset_id=str(ref),
        status_code=exc.status_code,
        iceprod_message=exc.iceprod_message,
    )
