"""The synchronous wait: one poll, tolerance of transient errors, and the poll loop.

Used by the sensor in poke and reschedule modes and by the submit operator's non-deferrable wait
(the deferrable wait is the trigger's). The decisions are :mod:`airflow_provider_iceprod.waiting`'s;
this module only polls through the hook and sleeps. See ``docs/waiting.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_iceprod.exceptions import (
    IceProdError,
    IceProdNotFoundError,
    IceProdPermissionError,
    IceProdTransientError,
)
from airflow_provider_iceprod.failure_logs import FAILED_OUTCOMES, log_failed_task_logs
from airflow_provider_iceprod.models import DatasetProgress
from airflow_provider_iceprod.wait_events import event_result, not_visible_error, timeout_event, verdict_event
from airflow_provider_iceprod.wait_progress import progress_line
from airflow_provider_iceprod.waiting import (
    Verdict,
    WaitOptions,
    WaitState,
    evaluate,
    outage_pause,
    ride_out,
    with_failed_task_names,
)

if TYPE_CHECKING:
    from airflow_provider_iceprod.hooks.iceprod import IceProdHook

log = logging.getLogger(__name__)
#: Event key set by the trigger when its progress carries the last known counts, not final ones.
COUNTS_FINAL = "counts_final"


def poll_once(
    hook: IceProdHook, dataset_id: str, options: WaitOptions, state: WaitState, now: float | None = None
) -> tuple[Verdict, DatasetProgress]:
    """One synchronous poll: progress, decision, and the failed task names when stalled.

    Raises :func:`not_visible_error` for 403/404. Transient errors propagate (the caller counts them).
    """
    try:
        progress = hook.dataset_progress(dataset_id)
        verdict = evaluate(progress, options, state, time.time() if now is None else now)
        if verdict.outcome == "stalled":
            verdict = with_failed_task_names(verdict, hook.task_counts_by_name(dataset_id))
    except (IceProdPermissionError, IceProdNotFoundError) as exc:
        raise not_visible_error(dataset_id, exc, getattr(hook, "iceprod_conn_id", None)) from exc
    state.error_count = 0
    return verdict, progress


def count_transient_error(
    state: WaitState, options: WaitOptions, exc: IceProdTransientError, log: Any
) -> None:
    """Remember a failed poll; re-raise it when the wait must end (``on_outage="fail"`` and more
    than ``tolerate_errors`` failed polls in a row), else log it (louder once past the tolerance)."""
    state.error_count += 1
    keep = ride_out(options, state.error_count)
    if keep is False:
        raise exc
    if keep:
        log.warning(
            "Polling IceProd failed (%s of %s tolerated in a row): %s",
            state.error_count,
            options.tolerate_errors,
            exc,
        )
    else:
        log.error(
            "IceProd has failed %s polls in a row (an outage?); still waiting until the deadline "
            "(on_outage='wait'), next poll in %.0f s: %s",
            state.error_count,
            outage_pause(options.poll_interval, state.error_count),
            exc,
        )


def poll_and_log(
    hook: IceProdHook,
    dataset_id: str,
    options: WaitOptions,
    state: WaitState,
    log: Any,
    now: float | None = None,
) -> tuple[Verdict, DatasetProgress] | None:
    """:func:`poll_once`, logged: the progress line (on change, and a heartbeat) and, when the
    dataset failed, its failed tasks' logs. A transient error is counted
    (:func:`count_transient_error`, which re-raises it when the wait must end) and gives ``None``."""
    try:
        verdict, progress = poll_once(hook, dataset_id, options, state, now)
    except IceProdTransientError as exc:
        count_transient_error(state, options, exc, log)
        return None
    line = progress_line(progress, state, now, force=verdict.done)
    if line:
        log.info("%s", line)
    if verdict.outcome in FAILED_OUTCOMES:
        log_failed_task_logs(hook, dataset_id, log)
    return verdict, progress


def wait_for_dataset(
    hook: IceProdHook,
    dataset_id: str,
    options: WaitOptions,
    *,
    deadline: float | None,
    log: Any,
    state: WaitState | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """Poll until the dataset is done (poke style, holds the worker). Returns the success event.

    ``deadline`` is wall-clock epoch seconds. Raises ``IceProdDatasetFailedError`` (errors, stall,
    suspended with ``on_suspended="fail"``, unreadable dataset) and ``AirflowSensorTimeout``
    (deadline passed, or suspended with ``on_suspended="timeout"``).
    """
    state = state if state is not None else WaitState()
    while True:
        polled = poll_and_log(hook, dataset_id, options, state, log, clock())
        if polled is not None and polled[0].done:
            return event_result(verdict_event(*polled))
        now = clock()
        if deadline is not None and now >= deadline:
            return event_result(timeout_event(dataset_id, deadline))
        interval = outage_pause(options.poll_interval, state.error_count)
        pause = interval if deadline is None else min(interval, deadline - now)
        sleep(max(pause, 0.0))


def complete_counts(hook: IceProdHook, event: object) -> object:
    """Fill in the final job and task counts of a trigger event that came without them.

    The shared poller ends a wait from the list call that saw the status change and sends no
    request per finishing dataset; its event has ``"counts_final": False`` and the last known
    counts. ``execute_complete`` (in the worker) calls this first: two requests (job and task
    counts), and for an ``errors`` failure the message is rebuilt with the final counts. Anything
    else (``None``, other events) is returned unchanged. If IceProd cannot answer (after the
    hook's retries), the event keeps its last known counts and ``counts_final`` stays ``False``.
    """
    if not isinstance(event, Mapping) or event.get(COUNTS_FINAL) is not False:
        return event
    progress = event.get("progress")
    if not isinstance(progress, Mapping) or not progress.get("dataset_id"):
        return event
    dataset_id = str(progress["dataset_id"])
    try:
        jobs = hook.job_counts(dataset_id)
        tasks = hook.task_counts(dataset_id)
    except IceProdError as exc:
        log.warning("Final counts of IceProd dataset %s failed; keeping the last known: %s", dataset_id, exc)
        return event
    done = {k: v for k, v in event.items() if k != COUNTS_FINAL}
    done["progress"] = {**progress, "job_counts": dict(jobs), "task_counts": dict(tasks)}
    if event.get("outcome") == "errors":  # its message quotes the counts
        final = DatasetProgress.from_row(progress, jobs, tasks)
        verdict = evaluate(final, WaitOptions(), WaitState(), time.time())
        if verdict.outcome == "errors":
            done["message"] = verdict.message
    return done
