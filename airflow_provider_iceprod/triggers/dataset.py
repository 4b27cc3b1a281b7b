"""``IceProdDatasetTrigger``: a deferred wait for an IceProd dataset, run by the triggerer.

The trigger does not poll IceProd itself: it subscribes to the process-wide
:mod:`~airflow_provider_iceprod.triggers.poller` of its connection, which polls every waited-on
dataset with about one request per interval, and decides with the same pure logic as the sensor
(:func:`airflow_provider_iceprod.waiting.evaluate`). It yields exactly one event and returns.

Importing this module is cheap, and so is building a trigger: the hook (httpx, tenacity, ...) is
imported in ``run()``, in a worker thread (:mod:`~airflow_provider_iceprod.async_warmup`), so the
import never blocks the triggerer's event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_iceprod.async_warmup import warm_async_path
from airflow_provider_iceprod.exceptions import (
    IceProdNotFoundError,
    IceProdPermissionError,
    IceProdTransientError,
)
from airflow_provider_iceprod.failure_logs import FAILED_OUTCOMES, alog_failed_task_logs
from airflow_provider_iceprod.hook_params import check_hook_params, plain_hook_params
from airflow_provider_iceprod.triggers.admission import admit
from airflow_provider_iceprod.version_compat import AIRFLOW_V_3_3_PLUS
from airflow_provider_iceprod.wait_loop import COUNTS_FINAL
from airflow_provider_iceprod.waiting import (
    WaitOptions,
    WaitState,
    error_event,
    evaluate,
    make_event,
    not_visible_error,
    progress_line,
    ride_out,
    timeout_event,
    verdict_event,
    with_failed_task_names,
)

if TYPE_CHECKING:
    from airflow_provider_iceprod.hooks.iceprod import IceProdHook

CLASSPATH = "airflow_provider_iceprod.triggers.dataset.IceProdDatasetTrigger"
#: Bound on the suspend request made by ``on_kill`` (Airflow allows 30 s by default).
ON_KILL_TIMEOUT = 25.0
#: How often ``on_kill`` checks its suspend request (IceProd's actions finish in seconds).
ON_KILL_POLL_INTERVAL = 1.0


class IceProdDatasetTrigger(BaseTrigger):
    """Wait for an IceProd dataset to reach its target states; fire one event.

    Args:
        dataset_id: the dataset's 32-hex id (resolve numbers before deferring).
        iceprod_conn_id: the ``iceprod`` connection.
        wait_options: ``WaitOptions.to_dict()`` (target states, on_suspended, stall_polls,
            poll_interval, tolerate_errors, on_outage: ``wait`` rides out IceProd outages until
            the deadline, ``fail`` fails after ``tolerate_errors`` failed polls).
        deadline: wall-clock epoch seconds (``time.time()``) after which a ``timeout`` event fires;
            ``None`` waits forever.
        hook_params: ``IceProdHook`` keyword arguments, plain numbers (the operator's or
            sensor's ``hook_params``, passed on unchanged).
        cancel_on_kill: on Airflow 3.3+, suspend the dataset when a user kills the task (mark
            failed/success, clear) while it is deferred.
        wait_state: ``WaitState.to_dict()``, so a rebuilt trigger keeps its stall counter and rate
            samples.

    Events (``TriggerEvent.payload``): ``{"status": "success"|"failed"|"timeout"|"error",
    "dataset_id", "outcome", "message", "progress"}`` (``progress`` is
    ``DatasetProgress.as_dict()`` or ``None``; error events add ``error_type``). A final event whose
    counts were not fetched in its interval has ``"counts_final": False``: ``execute_complete``
    fetches them (:func:`airflow_provider_iceprod.wait_loop.complete_counts`).
    """

    def __init__(
        self,
        dataset_id: str,
        iceprod_conn_id: str = "iceprod_default",
        *,
        wait_options: Mapping[str, Any] | None = None,
        deadline: float | None = None,
        hook_params: Mapping[str, Any] | None = None,
        cancel_on_kill: bool = False,
        wait_state: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(dataset_id, str) or not dataset_id:
            raise ValueError(f"dataset_id must be a non-empty string, got {dataset_id!r}")
        if deadline is not None and (isinstance(deadline, bool) or not isinstance(deadline, (int, float))):
            raise ValueError(f"deadline must be epoch seconds (time.time()) or None, got {deadline!r}")
        self.dataset_id = dataset_id
        self.iceprod_conn_id = iceprod_conn_id
        self.options = WaitOptions.from_dict(wait_options)
        self.deadline = float(deadline) if deadline is not None else None
        # Plain numbers only here: __init__ runs on the triggerer's event loop, so the hook (whose
        # import takes a moment) checks them in run(). The deferring operator or sensor already did.
        self.hook_params = plain_hook_params(hook_params)
        self.cancel_on_kill = bool(cancel_on_kill)
        self.state = WaitState.from_dict(wait_state)
        self._kill_sent = False

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            CLASSPATH,
            {
                "dataset_id": self.dataset_id,
                "iceprod_conn_id": self.iceprod_conn_id,
                "wait_options": self.options.to_dict(),
                "deadline": self.deadline,
                "hook_params": dict(self.hook_params),
                "cancel_on_kill": self.cancel_on_kill,
                "wait_state": self.state.to_dict(),
            },
        )

    # ------------------------------------------------------------------------------------ running

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            event = await self._wait()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # every failure ends as one error event
            self.log.error("Waiting for IceProd dataset %s failed: %s", self.dataset_id, exc)
            event = error_event(self.dataset_id, exc)
        yield TriggerEvent(event)

    async def _wait(self) -> dict[str, Any]:
        # a burst of new waits starts a batch per pass of the event loop, once the process has
        # loaded its async path in a thread (admit waits for async_warmup)
        await admit()
        check_hook_params(self.hook_params)  # no I/O once the hook module is loaded
        from airflow_provider_iceprod.triggers.poller import get_poller

        poller = get_poller(self.iceprod_conn_id, hook_params=self.hook_params)
        # the deadline is the poller's (one timer for every wait), not an asyncio.timeout per wait
        sub = poller.subscribe(self.dataset_id, self.options, deadline=self.deadline)
        last_progress = None
        try:
            while True:
                try:
                    update = sub.next_update()
                except TimeoutError:
                    return timeout_event(self.dataset_id, self.deadline or 0.0, last_progress)
                if update is None:
                    await sub.news()  # a future, not a coroutine: an idle wait keeps less
                    continue
                if update.error is not None:
                    event = self._on_error(update.error)
                    if event is not None:
                        return event
                    continue
                progress = update.progress
                if progress is None:
                    continue
                self.state.error_count = 0
                last_progress = progress
                verdict = evaluate(
                    progress,
                    self.options,
                    self.state,
                    time.time(),
                    counts_fresh=update.tasks_fresh,
                    jobs_fresh=update.jobs_fresh,
                )
                line = progress_line(progress, self.state, force=verdict.done)
                if line:
                    self.log.info("%s", line)
                if not verdict.done:
                    continue
                if verdict.outcome == "stalled":
                    try:
                        verdict = with_failed_task_names(
                            verdict, await poller.task_counts_by_name(self.dataset_id)
                        )
                    except Exception as exc:  # the names are a courtesy; the stall stands
                        self.log.warning("Could not fetch failed task names: %s", exc)
                if verdict.outcome in FAILED_OUTCOMES:
                    await alog_failed_task_logs(poller.hook, self.dataset_id, self.log)
                event = verdict_event(verdict, progress)
                if not (update.tasks_fresh and update.jobs_fresh):
                    # the poller sends no request per finishing dataset: execute_complete (in the
                    # worker) fetches the final counts (wait_loop.complete_counts)
                    event[COUNTS_FINAL] = False
                return event
        finally:
            poller.unsubscribe(sub)

    def _on_error(self, exc: BaseException) -> dict[str, Any] | None:
        """An event for a poll error, or None to keep waiting (a tolerated transient error)."""
        if isinstance(exc, IceProdTransientError):
            self.state.error_count += 1
            keep = ride_out(self.options, self.state.error_count)
            if keep:
                self.log.warning(
                    "Polling IceProd failed (%s of %s tolerated in a row): %s",
                    self.state.error_count,
                    self.options.tolerate_errors,
                    exc,
                )
                return None
            if keep is None:  # on_outage="wait": an outage never ends the wait, the deadline does
                self.log.error(
                    "IceProd has failed %s polls in a row (an outage?); still waiting for dataset %s "
                    "until %s (on_outage='wait'): %s",
                    self.state.error_count,
                    self.dataset_id,
                    "its deadline" if self.deadline is not None else "it ends (no deadline)",
                    exc,
                )
                return None
        if isinstance(exc, (IceProdPermissionError, IceProdNotFoundError)):
            failure = not_visible_error(self.dataset_id, exc, self.iceprod_conn_id)
            return make_event("failed", self.dataset_id, outcome="not_visible", message=str(failure))
        return error_event(self.dataset_id, exc)

    # ---------------------------------------------------------------------------------- user kill

    async def on_kill(self) -> None:
        """Airflow 3.3+: a user killed the deferred task. Suspend the dataset if asked to.

        Best effort and idempotent: only a ``processing`` or ``errors`` dataset is suspended, at
        most once per trigger, within :data:`ON_KILL_TIMEOUT`; it never raises.
        """
        if not AIRFLOW_V_3_3_PLUS or not self.cancel_on_kill or self._kill_sent or not self.dataset_id:
            return
        self._kill_sent = True
        try:
            await asyncio.wait_for(self._suspend(), ON_KILL_TIMEOUT)
        except Exception as exc:
            self.log.warning("Could not suspend IceProd dataset %s after the kill: %s", self.dataset_id, exc)

    @cached_property
    def hook(self) -> IceProdHook:
        """The hook of ``on_kill`` (the wait itself uses the poller's shared hook)."""
        from airflow_provider_iceprod.hooks.iceprod import IceProdHook

        return IceProdHook(
            self.iceprod_conn_id, **{**self.hook_params, "poll_interval": ON_KILL_POLL_INTERVAL}
        )

    async def _suspend(self) -> None:
        await warm_async_path()
        hook = self.hook
        dataset = await hook.aget_dataset(self.dataset_id)
        if dataset.status not in ("processing", "errors"):
            self.log.info(
                "IceProd dataset %s is %s; nothing to suspend after the kill.",
                self.dataset_id,
                dataset.status,
            )
            return
        self.log.info(
            "Task killed by a user: suspending IceProd dataset %s (cancel_on_kill).", self.dataset_id
        )
        await hook.asuspend_dataset(self.dataset_id)
