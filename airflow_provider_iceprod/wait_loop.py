"""The synchronous wait: one poll, tolerance of transient errors, and the poll loop.

Used by the sensor in poke and reschedule modes and by the submit operator's non-deferrable wait
(the deferrable wait is the trigger's). The decisions are :mod:`airflow_provider_iceprod.waiting`'s;
this module only polls through the hook and sleeps. See ``docs/waiting.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_iceprod.exceptions import (
    IceProdNotFoundError,
    IceProdPermissionError,
    IceProdTransientError,
)
from airflow_provider_iceprod.waiting import (
    Verdict,
    WaitOptions,
    WaitState,
    describe_progress,
    evaluate,
    event_result,
    not_visible_error,
    timeout_event,
    verdict_event,
    with_failed_task_names,
)

if TYPE_CHECKING:
    from airflow_provider_iceprod.hooks.iceprod import IceProdHook
    from airflow_provider_iceprod.models import DatasetProgress


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
    """Remember a failed poll; re-raise once more than ``tolerate_errors`` polls in a row failed."""
    state.error_count += 1
    if state.error_count > options.tolerate_errors:
        raise exc
    log.warning(
        "Polling IceProd failed (%s of %s tolerated in a row): %s",
        state.error_count,
        options.tolerate_errors,
        exc,
    )


def wait_for_dataset(
    hook: IceProdHook,
    dataset_id: str,
    options: WaitOptions,
    *,
    deadline: float | None,
    log: Any,
    state: WaitState | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the dataset is done (poke style, holds the worker). Returns the success event.

    ``deadline`` is wall-clock epoch seconds. Raises ``IceProdDatasetFailedError`` (errors, stall,
    suspended with ``on_suspended="fail"``, unreadable dataset) and ``AirflowSensorTimeout``
    (deadline passed, or suspended with ``on_suspended="timeout"``).
    """
    state = state if state is not None else WaitState()
    while True:
        try:
            verdict, progress = poll_once(hook, dataset_id, options, state)
        except IceProdTransientError as exc:
            count_transient_error(state, options, exc, log)
        else:
            log.info("%s", describe_progress(progress, state))
            if verdict.done:
                return event_result(verdict_event(verdict, progress))
        now = time.time()
        if deadline is not None and now >= deadline:
            return event_result(timeout_event(dataset_id, deadline))
        pause = options.poll_interval if deadline is None else min(options.poll_interval, deadline - now)
        sleep(max(pause, 0.0))
