"""Deciding when a waited-on IceProd dataset is done (the synchronous loop is in ``wait_loop``).

The decision logic here is pure: :func:`evaluate` looks at one poll's :class:`DatasetProgress`
and a small mutable :class:`WaitState` (stall counter, rate samples for the ETA) and returns a
:class:`Verdict`. The sensor (poke and reschedule modes), the deferrable trigger and the operators'
non-deferrable wait all use it, so every mode decides the same way.

How the outcome is decided (see ``docs/waiting.md``):

* **success**: the status is one of ``target_states`` (default ``complete``). For ``complete``
  there is a faster, cron-independent check too: ``job_counts`` is exactly ``{"complete": N}`` with
  ``N >= jobs_submitted`` (also for a truncated dataset: IceProd 3.2.43 keeps creating its jobs, and
  says ``complete`` itself when the existing ones are done). A ``complete`` status with fresh counts
  is checked too (docs/iceprod-quirks.md): tasks still to run (a ``hard_reset`` of a complete dataset
  re-runs them) keep the wait running; fewer jobs than ``jobs_submitted`` on a dataset that is not
  truncated (``add_jobs`` on a complete dataset) can never be made, so the wait fails.
* **errors**: status ``errors`` fails at once.
* **suspended**: ``on_suspended`` decides: ``fail``, ``wait`` (keep waiting) or ``timeout`` (end
  the wait as a timeout, like the deadline passing; with ``soft_fail`` the task is skipped).
* **stalled**: IceProd never reports this itself. A failed task leaves its dependants ``idle``
  forever, so the job and the dataset stay ``processing``. When the task counts show failed tasks
  and nothing waiting, queued or processing for ``stall_polls`` consecutive polls, the wait fails.
  So does a processing dataset that has fewer jobs than ``jobs_submitted`` (not truncated) and no
  task idle, waiting, queued, processing or failed for ``MATERIALIZATION_STALL_SECONDS``: its
  materialization failed (for example on a bad ``depends``) and IceProd reports nothing.
* Anything else (``processing``, an empty or unknown status) is still running.

No Airflow database access happens here; nothing here sees a token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_iceprod.models import DATASET_STATUSES, DatasetProgress

# Re-exported: the sensor, the trigger and the submit operator import these from here.
from airflow_provider_iceprod.wait_events import (  # noqa: F401
    error_event,
    event_result,
    make_event,
    not_visible_error,
    timeout_event,
    verdict_event,
)
from airflow_provider_iceprod.wait_progress import counts_text, dataset_label, progress_line  # noqa: F401

ON_SUSPENDED_CHOICES = ("fail", "wait", "timeout")
ON_OUTAGE_CHOICES = ("wait", "fail")
#: During an outage the pause between polls doubles per failed poll, up to 8 intervals or this,
#: whichever is shorter (never below the interval): a long outage costs little.
MAX_OUTAGE_PAUSE = 300.0
#: How many rate samples a :class:`WaitState` keeps for the ETA (a sliding window of the last
#: changes in the number of complete jobs, plus the oldest kept one as the window's start).
MAX_RATE_SAMPLES = 12
#: How long a processing dataset may miss jobs with nothing to run before the wait calls it stuck.
MATERIALIZATION_STALL_SECONDS = 3600.0
#: How far one ETA may rise above the previous one (counted down by the time since): this share
#: of it, or :data:`ETA_MIN_SLACK` seconds, whichever is more. Falls are never limited.
ETA_MAX_RISE = 0.25
ETA_MIN_SLACK = 60.0


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
            own retries) with a warning; after that, see ``on_outage``.
        on_outage: ``wait`` (default): IceProd being unreachable or overloaded (transient errors)
            never ends the wait; it keeps polling until its deadline, with error-level log lines
            once ``tolerate_errors`` is used up and a pause that doubles per failed poll (up to
            8 poll intervals or :data:`MAX_OUTAGE_PAUSE`). ``fail``: the wait fails after ``tolerate_errors`` + 1
            failed polls in a row.
    """

    target_states: tuple[str, ...] = ("complete",)
    on_suspended: str = "fail"
    stall_polls: int = 3
    poll_interval: float = 60.0
    tolerate_errors: int = 3
    on_outage: str = "wait"

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
        if self.on_outage not in ON_OUTAGE_CHOICES:
            raise ValueError(f"on_outage must be one of {list(ON_OUTAGE_CHOICES)}, got {self.on_outage!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_states": list(self.target_states),
            "on_suspended": self.on_suspended,
            "stall_polls": self.stall_polls,
            "poll_interval": self.poll_interval,
            "tolerate_errors": self.tolerate_errors,
            "on_outage": self.on_outage,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> WaitOptions:
        data = dict(data or {})
        known = {
            "target_states",
            "on_suspended",
            "stall_polls",
            "poll_interval",
            "tolerate_errors",
            "on_outage",
        }
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown wait option(s): {unknown}")
        if "target_states" in data:
            states = data["target_states"]
            data["target_states"] = (states,) if isinstance(states, str) else tuple(states)
        return cls(**data)


def outage_pause(interval: float, failed_polls: int) -> float:
    """The pause before the next poll after ``failed_polls`` failed polls in a row: the interval,
    doubled per failed poll after the first, up to 8 intervals or :data:`MAX_OUTAGE_PAUSE`,
    whichever is shorter (never below the interval)."""
    if failed_polls <= 1:
        return interval
    cap = max(interval, min(interval * 8, MAX_OUTAGE_PAUSE))
    return min(interval * 2.0 ** min(failed_polls - 1, 30), cap)


def ride_out(options: WaitOptions, failed_polls: int) -> bool | None:
    """After a failed poll (a transient error): True to keep waiting quietly (a warning), None to
    keep waiting loudly (an error line: the outage outlasted ``tolerate_errors``), False to fail."""
    if failed_polls <= options.tolerate_errors:
        return True
    return None if options.on_outage == "wait" else False


# ----------------------------------------------------------------------------------------------- state


@dataclass
class WaitState:
    """What a wait remembers between polls; plain values so it survives serialization.

    ``stall_count``: consecutive polls that looked stalled. ``samples``: ``(time, jobs_complete)``
    pairs, one per change in the number of complete jobs (a sliding window), for the ETA.
    ``polls``: polls that had counts. ``error_count``: consecutive polls that failed with a
    transient error. ``eta``: ``(time, seconds)`` of the last ETA (limits how far the next may
    rise), ``()`` before the first. ``last_key``/``last_logged``: what the last progress line showed
    and when (the log gets a line only when that changes, or a heartbeat every
    ``wait_progress.HEARTBEAT_SECONDS``).

    ``samples`` and ``eta`` are tuples of floats, which Python's garbage collector does not track:
    a triggerer keeps one state per deferred task, and a full collection walks every tracked object.
    """

    stall_count: int = 0
    samples: tuple[tuple[float, float], ...] = ()
    polls: int = 0
    error_count: int = 0
    idle_since: float | None = None  # when a processing dataset was first seen missing jobs, idle
    eta: tuple[float, float] | tuple[()] = ()
    last_key: str = ""
    last_logged: float = 0.0

    def __post_init__(self) -> None:
        # callers may hand in lists (as JSON gives them): keep the untracked tuple form, the last
        # MAX_RATE_SAMPLES samples, and an ETA only if it is a (time, seconds) pair
        samples = tuple((float(t), float(c)) for t, c in self.samples)
        self.samples = samples[-MAX_RATE_SAMPLES:]
        eta = tuple(float(v) for v in self.eta)
        self.eta = eta if len(eta) == 2 else ()  # type: ignore[assignment]  # length checked

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stall_count": self.stall_count,
            "samples": [[float(t), float(c)] for t, c in self.samples],
            "polls": self.polls,
            "error_count": self.error_count,
            "eta": [float(v) for v in self.eta],
            "last_key": self.last_key,
            "last_logged": float(self.last_logged),
        }
        if self.idle_since is not None:
            out["idle_since"] = float(self.idle_since)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> WaitState:
        data = data or {}
        try:
            return cls(  # __post_init__ converts and checks samples and eta
                stall_count=int(data.get("stall_count", 0)),
                samples=tuple(data.get("samples") or ()),
                polls=int(data.get("polls", 0)),
                error_count=int(data.get("error_count", 0)),
                idle_since=None if data.get("idle_since") is None else float(data["idle_since"]),
                eta=tuple(data.get("eta") or ()),
                last_key=str(data.get("last_key") or ""),
                last_logged=float(data.get("last_logged") or 0.0),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"wait_state is not a valid WaitState dict: {exc}") from None

    def record_sample(self, now: float, jobs_complete: int) -> None:
        """Remember when the number of complete jobs changed (the first poll is the baseline)."""
        if self.samples and self.samples[-1][1] > jobs_complete:
            self.samples = ()  # counts went down (a reset): the old rate means nothing
            self.eta = ()
        if self.samples and self.samples[-1][1] == jobs_complete:
            return
        self.samples = (*self.samples, (float(now), float(jobs_complete)))[-MAX_RATE_SAMPLES:]

    def rate(self, now: float | None = None) -> float | None:
        """Jobs completed per second over the window (up to ``now``), or None before any finished.

        Measuring up to ``now`` rather than to the last completion makes a pause slow the rate
        down gradually instead of leaving the ETA stale or unknown.
        """
        if len(self.samples) < 2:
            return None
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        end = max(t1, now if now is not None else t1)
        if end <= t0 or c1 <= c0:
            return None
        return (c1 - c0) / (end - t0)

    def update_eta(self, progress: DatasetProgress, now: float) -> None:
        """Recompute the ETA at ``now``; a rise is limited (see :data:`ETA_MAX_RISE`)."""
        rate = self.rate(now)
        if rate is None:
            return
        remaining = max(progress.jobs_total - progress.jobs_complete, 0)
        eta = remaining / rate
        if self.eta:
            then, previous = self.eta
            expected = max(previous - (now - then), 0.0)
            eta = min(eta, expected + max(ETA_MAX_RISE * expected, ETA_MIN_SLACK))
        self.eta = (float(now), float(eta))

    def eta_at(self, now: float) -> float | None:
        """The last ETA, counted down to ``now``; None before any job finished during the wait."""
        if not self.eta:
            return None
        then, eta = self.eta
        return max(eta - max(now - then, 0.0), 0.0)


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


def jobs_all_complete(progress: DatasetProgress) -> bool:
    """The cron-independent success check: ``job_counts`` is exactly ``{"complete": N}``."""
    counts = {k: v for k, v in progress.job_counts.items() if v}
    if set(counts) != {"complete"}:
        return False
    return counts["complete"] >= max(progress.jobs_submitted, 1)


def tasks_pending(progress: DatasetProgress) -> int:
    """Tasks IceProd will still run: idle, waiting, queued or processing."""
    return progress.tasks_active + progress.task_counts.get("idle", 0)


def missing_jobs(progress: DatasetProgress) -> int:
    """Jobs of ``jobs_submitted`` not created yet (0 for a truncated dataset)."""
    if progress.truncated:
        return 0
    return max(progress.jobs_submitted - sum(progress.job_counts.values()), 0)


def materialization_idle(progress: DatasetProgress) -> bool:
    """A processing dataset missing jobs, with no task to run and none failed."""
    return (
        progress.status == "processing"
        and missing_jobs(progress) > 0
        and tasks_pending(progress) == 0
        and progress.tasks_failed == 0
    )


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
    label = dataset_label(progress)
    if counts_fresh:
        state.polls += 1
        if progress.job_counts or progress.task_counts:
            state.record_sample(now, progress.jobs_complete)
            state.update_eta(progress, now)

    if status == "complete" and "complete" in options.target_states and jobs_fresh and counts_fresh:
        if progress.task_counts and tasks_pending(progress):
            return Verdict(
                False,
                "running",
                f"{label} is complete but {tasks_pending(progress)} task(s) still run (after a hard_reset, "
                "IceProd re-runs the tasks of a complete dataset); waiting for them.",
            )
        if progress.job_counts and missing_jobs(progress):
            return Verdict(
                True,
                "unreachable",
                f"{label} is complete with {sum(progress.job_counts.values())} of "
                f"{progress.jobs_submitted} jobs: IceProd creates no jobs for a complete dataset, so the "
                "added jobs will never run. Submit a new dataset for them.",
                "failed",
            )
    if status in options.target_states:
        state.stall_count = 0
        return Verdict(True, "success", f"{label} reached status {status!r}.", "success")
    if jobs_fresh and "complete" in options.target_states and jobs_all_complete(progress):
        state.stall_count = 0
        return Verdict(
            True,
            "success",
            f"{label}: all {progress.jobs_complete} jobs are complete"
            f"; IceProd will mark it complete on its next pass (status now {status!r}).",
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
            f"{label} is in status 'errors': jobs {counts_text(progress.job_counts)}, "
            f"tasks {counts_text(progress.task_counts)}. Retry its failed tasks or reset it in IceProd.",
            "failed",
        )
    if status == "suspended" and options.on_suspended != "wait":
        why = (
            f"{label} is suspended (by a user, or by IceProd when only suspended work was left); "
            f"on_suspended={options.on_suspended!r}. Resume it in IceProd to continue."
        )
        if progress.jobs_submitted == 0:  # docs/iceprod-quirks.md, 10
            why += (
                " It has no jobs (jobs_submitted=0): IceProd suspends an empty dataset on its next "
                "completion pass. Add jobs (action 'add_jobs'), resume it, then wait."
            )
        if options.on_suspended == "timeout":
            return Verdict(True, "suspended", why, "timeout")
        return Verdict(True, "suspended", why, "failed")

    if counts_fresh and jobs_fresh:
        if not materialization_idle(progress):
            state.idle_since = None
        elif state.idle_since is None:
            state.idle_since = now
        elif now - state.idle_since >= MATERIALIZATION_STALL_SECONDS and state.polls >= options.stall_polls:
            return Verdict(
                True,
                "stalled",
                f"{label} stalled: {missing_jobs(progress)} of {progress.jobs_submitted} jobs were never "
                f"created and nothing has been waiting, queued, processing or failed for "
                f"{now - state.idle_since:.0f} s (tasks {counts_text(progress.task_counts)}, jobs "
                f"{counts_text(progress.job_counts)}). IceProd's materialization failed, for example on a "
                "bad depends.",
                "failed",
            )
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
                f"{counts_text(progress.task_counts)}, jobs {counts_text(progress.job_counts)}). "
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
