"""``IceProdDatasetSensor``: wait until an IceProd dataset is really done.

Modes: ``poke`` (holds a worker slot), ``reschedule`` (frees it between pokes) and deferrable
(checks once, then hands the wait to the triggerer, where many waits share one poller). Every
mode decides with :func:`airflow_provider_iceprod.waiting.evaluate`. See ``docs/waiting.md``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, conf
from airflow.sdk.bases.sensor import PokeReturnValue
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, AirflowSkipException

from airflow_provider_iceprod.api import checks
from airflow_provider_iceprod.exceptions import (
    IceProdDatasetFailedError,
    IceProdNotFoundError,
    IceProdPermissionError,
)
from airflow_provider_iceprod.hook_params import check_hook_params
from airflow_provider_iceprod.wait_loop import complete_counts, poll_and_log
from airflow_provider_iceprod.waiting import (
    Verdict,
    WaitOptions,
    WaitState,
    event_result,
    not_visible_error,
    verdict_event,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_iceprod.hooks.iceprod import IceProdHook
    from airflow_provider_iceprod.models import DatasetProgress

#: Key of the wait state in the task state store (Airflow 3.3+, reschedule mode).
STATE_KEY = "iceprod_wait_state"
#: Spacing of in-poke stall confirmations when no task state store exists (Airflow < 3.3).
STALL_CONFIRM_MAX_INTERVAL = 60.0


class IceProdDatasetSensor(BaseSensorOperator):
    """Wait for an IceProd dataset to reach ``target_states`` (default ``complete``).

    Fails fast when the dataset is in ``errors``, when it stalls (failed tasks and nothing
    waiting, queued or processing for ``stall_polls`` consecutive polls; the message names the
    failed tasks), when the token cannot read it (403/404), and when it is ``suspended`` with
    ``on_suspended="fail"``. Each poll logs jobs complete/submitted, tasks by status, the percent
    done and an ETA from the observed rate. A timeout raises ``AirflowSensorTimeout`` in every
    mode; ``soft_fail`` turns failures and timeouts into a skip.

    Args:
        dataset: dataset id, dataset number, or the submit operator's XCom (templated; an
            ``XComArg`` works too).
        iceprod_conn_id: the ``iceprod`` connection (templated).
        target_states: dataset statuses that end the wait successfully.
        on_suspended: ``fail`` (default), ``wait`` (keep waiting) or ``timeout`` (end the wait as
            a timeout, which ``soft_fail`` turns into a skip).
        stall_polls: consecutive stalled-looking polls before failing (see ``docs/waiting.md``).
        tolerate_errors: consecutive polls that may fail with a transient IceProd error (after the
            hook's retries) with a warning; after that, see ``on_outage``.
        on_outage: ``wait`` (default): an IceProd outage never ends the wait; it keeps polling
            until ``timeout``, logging errors and backing off (the pause doubles per failed poll,
            up to 5 minutes). ``fail``: fail after ``tolerate_errors`` + 1 failed polls in a row.
        deferrable: wait in the triggerer. Defaults to ``[operators] default_deferrable``.
        cancel_on_kill: deferrable mode, Airflow 3.3+: suspend the dataset when a user kills the
            deferred task (mark failed/success, clear).
        hook_params: ``IceProdHook`` keyword arguments (``retry_limit``, ``retry_delay``,
            ``max_delay``, ``retry_after_cap``, ``timeout``, ``poll_interval``); plain numbers,
            checked when the DAG is parsed, and handed to the trigger unchanged.
        poke_interval: seconds between polls (all modes).
        **kwargs: ``BaseSensorOperator`` arguments (``timeout``, ``mode``, ``soft_fail``, ...).
    """

    template_fields: Sequence[str] = ("dataset", "iceprod_conn_id")
    ui_color = "#cde8f5"

    def __init__(
        self,
        *,
        dataset: Any,
        iceprod_conn_id: str = "iceprod_default",
        target_states: Sequence[str] = ("complete",),
        on_suspended: str = "fail",
        stall_polls: int = 3,
        tolerate_errors: int = 3,
        on_outage: str = "wait",
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        cancel_on_kill: bool = False,
        hook_params: dict[str, Any] | None = None,
        poke_interval: timedelta | float = 60,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.dataset = dataset
        self.iceprod_conn_id = iceprod_conn_id
        self.wait_options = WaitOptions(
            target_states=tuple([target_states] if isinstance(target_states, str) else target_states),
            on_suspended=on_suspended,
            stall_polls=stall_polls,
            poll_interval=max(float(self.poke_interval), 0.001),
            tolerate_errors=tolerate_errors,
            on_outage=on_outage,
        )
        if isinstance(dataset, (int, str, Mapping)) and not (isinstance(dataset, str) and "{{" in dataset):
            checks.dataset_ref(dataset)  # a literal: reject a typo when the DAG is parsed
        self.deferrable = deferrable
        self.cancel_on_kill = cancel_on_kill
        self.hook_params = check_hook_params(hook_params)
        self._dataset_id: str | None = None
        self._state = WaitState()

    @cached_property
    def hook(self) -> IceProdHook:
        """The hook of this task (built on first use, after the templates are rendered)."""
        from airflow_provider_iceprod.hooks.iceprod import IceProdHook

        return IceProdHook(self.iceprod_conn_id, **self.hook_params)

    # ------------------------------------------------------------------------------- the dataset

    def _resolve_dataset_id(self) -> str:
        if self._dataset_id is None:
            ref = checks.dataset_ref(self.dataset)
            try:
                self._dataset_id = self.hook.resolve_dataset_id(ref)
            except (IceProdPermissionError, IceProdNotFoundError) as exc:
                raise not_visible_error(ref, exc, self.iceprod_conn_id) from exc
        return self._dataset_id

    def _with_url(self, verdict: Verdict, dataset_id: str) -> Verdict:
        if verdict.status in ("success", "running"):
            return verdict
        try:
            url = self.hook.dataset_url(dataset_id)
        except Exception:
            return verdict
        return Verdict(verdict.done, verdict.outcome, f"{verdict.message} See {url}", verdict.status)

    # ------------------------------------------------------------------- state across reschedules

    def _state_store(self, context: Context) -> Any:
        if not self.reschedule or self.deferrable:  # deferrable: the state travels in the trigger
            return None
        return context.get("task_state_store")  # type: ignore[attr-defined]

    def _load_state(self, context: Context) -> WaitState:
        store = self._state_store(context)
        if store is not None:
            try:
                stored = store.get(STATE_KEY)
                if isinstance(stored, Mapping):
                    return WaitState.from_dict(stored)
            except Exception as exc:  # a broken store must not fail the wait
                self.log.warning("Could not read the wait state from the task state store: %s", exc)
        return self._state

    def _save_state(self, context: Context, state: WaitState, *, done: bool = False) -> None:
        self._state = state
        store = self._state_store(context)
        if store is None:
            return
        try:
            if done:
                store.delete(STATE_KEY)
            else:
                store.set(STATE_KEY, state.to_dict(), retention=timedelta(days=30))
        except Exception as exc:
            self.log.warning("Could not save the wait state to the task state store: %s", exc)

    # ------------------------------------------------------------------------------------ polling

    def _poll(self, dataset_id: str, state: WaitState) -> tuple[Verdict, DatasetProgress] | None:
        polled = poll_and_log(self.hook, dataset_id, self.wait_options, state, self.log)
        if polled is None:
            return None
        verdict, progress = polled
        return self._with_url(verdict, dataset_id), progress

    def poke(self, context: Context) -> bool | PokeReturnValue:
        dataset_id = self._resolve_dataset_id()
        state = self._load_state(context)
        polled = self._poll(dataset_id, state)
        # Without a task state store (Airflow < 3.3) a rescheduled sensor forgets its stall
        # counter, so it confirms a suspected stall within this poke instead.
        confirm = self.reschedule and self._state_store(context) is None
        while confirm and polled is not None and not polled[0].done and state.stall_count > 0:
            time.sleep(min(self.poke_interval, STALL_CONFIRM_MAX_INTERVAL))
            polled = self._poll(dataset_id, state)
        if polled is None or not polled[0].done:
            self._save_state(context, state)
            return False
        self._save_state(context, state, done=True)
        verdict, progress = polled
        return PokeReturnValue(True, event_result(verdict_event(verdict, progress)))

    # --------------------------------------------------------------------------------- deferrable

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        try:
            done = self.poke(context)  # check once: a finished dataset never needs the triggerer
        except (AirflowSensorTimeout, AirflowFailException) as exc:
            if self.soft_fail:
                raise AirflowSkipException(f"Skipping due to soft_fail: {exc}") from exc
            raise
        if isinstance(done, PokeReturnValue) and done.is_done:
            return done.xcom_value
        from airflow_provider_iceprod.triggers.dataset import IceProdDatasetTrigger

        self.defer(
            trigger=IceProdDatasetTrigger(
                self._resolve_dataset_id(),
                self.iceprod_conn_id,
                wait_options=self.wait_options.to_dict(),
                deadline=time.time() + self.timeout,
                hook_params=self.hook_params,
                cancel_on_kill=self.cancel_on_kill,
                wait_state=self._state.to_dict(),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Resume after the trigger: return the success event, raise for anything else."""
        try:
            result = event_result(complete_counts(self.hook, event))
        except IceProdDatasetFailedError as exc:
            dataset_id = exc.dataset_id or ""
            try:
                url = f" See {self.hook.dataset_url(dataset_id)}" if dataset_id else ""
            except Exception:
                url = ""
            raise IceProdDatasetFailedError(f"{exc}{url}", dataset_id=dataset_id) from None
        self.log.info("%s", result.get("message"))
        return result
