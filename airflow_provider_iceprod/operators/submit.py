"""``IceProdSubmitDatasetOperator``: submit a dataset config to IceProd once, optionally wait for it.

Order of work in :meth:`~IceProdSubmitDatasetOperator.execute`:

1. render and parse the config (dict, ``.json``/``.yaml`` file, or Jinja) and check it with every
   other argument in :func:`~airflow_provider_iceprod.api.checks.check_submit`: nothing is sent
   before this passes (``dry_run=True`` stops here and returns the config);
2. reattach to the dataset an earlier try created (task state store on Airflow 3.3+, then the
   description marker), applying ``on_existing_failed`` when that dataset ended badly; or hand the
   checked request to ``hook.submit`` (so the config is validated once) and wait for IceProd's
   submit request to yield a dataset id;
3. push the XComs ``dataset_id``, ``dataset``, ``url`` and the extra-link XCom at once;
4. optionally wait for the dataset (the sensor's semantics, sync or deferrable).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, conf

from airflow_provider_iceprod.api import checks
from airflow_provider_iceprod.exceptions import (
    IceProdConfigError,
    IceProdDatasetFailedError,
    IceProdTransientError,
)
from airflow_provider_iceprod.hook_params import check_hook_params
from airflow_provider_iceprod.links import IceProdDatasetLink, push_dataset_xcoms
from airflow_provider_iceprod.operators._common import emit_asset_events, outlets_with_alias
from airflow_provider_iceprod.operators._resume import (
    DATASET_ID_KEY,
    REQUEST_ID_KEY,
    SENT_AT_KEY,
    SubmitState,
    existing_problem,
    marker_for_context,
    reattach_from_state,
    supersede,
)
from airflow_provider_iceprod.operators._submit_args import merged_extra_fields, parse_config, seconds

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_iceprod.api.checks import SubmitRequest
    from airflow_provider_iceprod.hooks.iceprod import IceProdHook
    from airflow_provider_iceprod.models import SubmitResult
    from airflow_provider_iceprod.waiting import WaitOptions

ON_EXISTING_FAILED = ("reset", "resubmit", "fail")


def decided_status(progress: Mapping[str, Any], target_states: Sequence[str]) -> str:
    """The dataset status a successful wait decided on, for the asset event.

    IceProd's status when it is a target state; otherwise the wait ended on the job counts (every
    job complete, before IceProd's cron marks the dataset), which means ``complete``, even when the
    dataset read of that same poll still said ``processing``.
    """
    status = str(progress.get("status") or "")
    return status if status in target_states else "complete"


class IceProdSubmitDatasetOperator(BaseOperator):
    """Submit an IceProd dataset config, once per task instance; return the dataset id.

    Args:
        config: the dataset config: a dict, a ``.json``/``.yaml``/``.yml`` file name (relative
            to the DAG folder or ``template_searchpath``; rendered with Jinja), or JSON/YAML text.
            Templated. IceProd macros such as ``$(dataset)`` are left alone.
        description: the dataset description (templated). The operator appends a marker
            ``[airflow:<16 hex>]`` that lets a retried task find its dataset.
        jobs_submitted: number of jobs (an integer >= 0, templated); checked when the DAG is
            parsed when it is not a template. More than 1,000,000 needs ``allow_large=True``.
            ``0`` makes an empty dataset that gets its jobs later (``add_jobs``); IceProd suspends
            it on its next completion pass unless it is ``always_active``, and it cannot be
            waited for (``wait_for_completion=True`` is refused).
        allow_large: allow ``jobs_submitted`` above 1,000,000.
        group: ``users`` (default), ``simprod``, ``filtering`` or ``admin`` (templated); the token
            must be a member.
        iceprod_conn_id: the Airflow connection (templated).
        tasks_per_job: when given, the config must have exactly this many tasks.
        priority: dataset priority (a number; negative ones too, as IceProd accepts them), sent
            as an extra submit field.
        start_suspended: create the dataset ``suspended`` (``{"status": "suspended"}``).
        debug: IceProd's dataset ``debug`` flag.
        extra_submit_fields: other optional ``POST /datasets`` fields (``jobs_immutable``,
            ``always_active``, ``auth_groups_read``, ...), checked before sending.
        materialize: ask IceProd to create the first jobs now instead of waiting for its cron.
        low_level: submit with ``POST /datasets`` + ``PUT /config`` (tokens with the system
            role) instead of ``/actions/submit``.
        dry_run: render and validate, log the final config and return it; submit nothing.
        on_existing_failed: what a retried (or cleared) task does when the dataset an earlier
            try created is in ``errors``, stalled (failed tasks, nothing running) or ``suspended``:
            ``reset`` (default: retry its failed tasks, or resume it when suspended), ``resubmit``
            (mark the old dataset superseded and submit a new one) or ``fail``.
        submit_timeout: seconds to wait for IceProd's submit request to yield a dataset.
        reconcile_grace: seconds to look for the dataset (by its marker) when the answer to the
            submit was lost, or when a retry finds a submit of an earlier try possibly still
            queued at IceProd (counted from when that submit was sent). Never re-sent: after
            this the task fails without retries (``IceProdUncertainError``) and asks a person
            to check. Default 120.
        wait_for_completion: after submitting, wait for the dataset like ``IceProdDatasetSensor``.
        deferrable: wait in the triggerer instead of holding a worker slot (default:
            ``[operators] default_deferrable``).
        poll_interval: seconds between progress polls while waiting.
        wait_timeout: give up waiting after this long (seconds or timedelta): the task fails
            with ``AirflowSensorTimeout``; the dataset keeps running.
        target_states: dataset statuses that end the wait successfully (default ``complete``).
        on_suspended: ``fail`` (default), ``wait`` or ``timeout`` when the dataset is suspended.
        stall_polls: consecutive polls with failed tasks and nothing running before the wait
            fails as stalled.
        tolerate_errors: consecutive polls that may fail with a transient IceProd error (after
            the hook's retries) with a warning; after that, see ``on_outage``.
        on_outage: ``wait`` (default): an IceProd outage never ends the wait; it keeps polling
            until ``wait_timeout``, logging errors and backing off (the pause doubles per failed
            poll, up to 5 minutes). ``fail``: fail after ``tolerate_errors`` + 1 failed polls.
        cancel_on_kill: when the task is killed while waiting (marked failed/success, cleared),
            suspend the dataset it submitted (default ``True``; best effort, resumable with the
            ``resume`` action). In deferrable mode the trigger does this on Airflow 3.3+.
        asset_alias: emit an asset event for ``iceprod://<api host>/datasets/<number>`` through
            ``AssetAlias(asset_alias)`` on success.
        hook_params: ``IceProdHook`` keyword arguments (``retry_limit``, ``retry_delay``,
            ``max_delay``, ``retry_after_cap``, ``timeout``, ``poll_interval`` of IceProd
            ``/actions`` requests); plain numbers, checked when the DAG is parsed.
    """

    template_fields: Sequence[str] = ("config", "description", "jobs_submitted", "group", "iceprod_conn_id")
    template_ext: Sequence[str] = (".json", ".yaml", ".yml")
    template_fields_renderers = {"config": "json"}
    operator_extra_links = (IceProdDatasetLink(),)
    ui_color = "#d8eefa"

    def __init__(
        self,
        *,
        config: dict[str, Any] | str,
        description: str,
        jobs_submitted: int | str = 1,
        group: str = "users",
        iceprod_conn_id: str = "iceprod_default",
        tasks_per_job: int | None = None,
        priority: float | None = None,
        start_suspended: bool = False,
        debug: bool = False,
        extra_submit_fields: dict[str, Any] | None = None,
        materialize: bool = False,
        low_level: bool = False,
        dry_run: bool = False,
        on_existing_failed: str = "reset",
        submit_timeout: float = 900.0,
        reconcile_grace: float = checks.DEFAULT_RECONCILE_GRACE,
        wait_for_completion: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 60.0,
        wait_timeout: float | timedelta | None = None,
        target_states: Sequence[str] = ("complete",),
        on_suspended: str = "fail",
        stall_polls: int = 3,
        tolerate_errors: int = 3,
        on_outage: str = "wait",
        cancel_on_kill: bool = True,
        asset_alias: str | None = None,
        hook_params: dict[str, Any] | None = None,
        allow_large: bool = False,
        **kwargs: Any,
    ) -> None:
        if on_existing_failed not in ON_EXISTING_FAILED:
            raise IceProdConfigError(
                f"on_existing_failed must be one of {list(ON_EXISTING_FAILED)}, got {on_existing_failed!r}.",
                field="on_existing_failed",
            )
        kwargs["outlets"] = outlets_with_alias(kwargs.get("outlets"), asset_alias)
        super().__init__(**kwargs)
        self.config = config
        self.description = description
        self.jobs_submitted = jobs_submitted
        self.group = group
        self.iceprod_conn_id = iceprod_conn_id
        self.tasks_per_job = tasks_per_job
        self.priority = priority
        self.start_suspended = start_suspended
        self.debug = debug
        self.extra_submit_fields = extra_submit_fields
        self.materialize = materialize
        self.low_level = low_level
        self.is_dry_run = dry_run  # BaseOperator.dry_run() is a method
        self.on_existing_failed = on_existing_failed
        self.submit_timeout = submit_timeout
        self.reconcile_grace = checks.finite_number(reconcile_grace, "reconcile_grace", minimum=0)
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.wait_timeout = wait_timeout
        self.target_states = tuple(target_states) if not isinstance(target_states, str) else (target_states,)
        self.on_suspended = on_suspended
        self.stall_polls = stall_polls
        self.tolerate_errors = tolerate_errors
        self.on_outage = on_outage
        self.cancel_on_kill = cancel_on_kill
        self.asset_alias = asset_alias
        self.hook_params = check_hook_params(hook_params)
        self.allow_large = bool(allow_large)
        # Literal values are checked now (DAG parse time), with the same rules as at execute.
        if not (isinstance(jobs_submitted, str) and "{{" in jobs_submitted):
            jobs = checks.job_count(
                jobs_submitted, "jobs_submitted", allow_large=self.allow_large, allow_zero=True
            )
            self._check_wait_jobs(jobs)
        if priority is not None:
            checks.extra_fields({"priority": priority})
        # run-time state (this try only)
        self._dataset_id: str | None = None
        self._waiting = False
        self._kill_handled = False
        if wait_for_completion:
            self._wait_options()  # fail at DAG parse time on bad wait options

    # ------------------------------------------------------------------ input checks (no network)

    def _wait_options(self) -> WaitOptions:
        from airflow_provider_iceprod.waiting import WaitOptions

        try:
            return WaitOptions(
                target_states=self.target_states,
                on_suspended=self.on_suspended,
                stall_polls=self.stall_polls,
                poll_interval=self.poll_interval,
                tolerate_errors=self.tolerate_errors,
                on_outage=self.on_outage,
            )
        except ValueError as exc:
            raise IceProdConfigError(f"Invalid wait option: {exc}", field="wait options") from None

    def _check_wait_jobs(self, jobs: int) -> None:
        """A dataset without jobs never completes: waiting for one would only end on suspension or
        the timeout (docs/iceprod-quirks.md, 10)."""
        if jobs == 0 and self.wait_for_completion:
            raise IceProdConfigError(
                "jobs_submitted=0 with wait_for_completion=True: a dataset without jobs never "
                "completes (IceProd suspends it on its next completion pass unless it is always_active), "
                "so the wait could only fail or time out. Submit it without waiting; add jobs later "
                "(IceProdDatasetActionOperator action='add_jobs', then action='resume' if it was "
                "suspended) and wait with IceProdDatasetSensor.",
                field="jobs_submitted",
            )

    def prepare(self, marker: str | None = None) -> SubmitRequest:
        """Check every rendered argument, the config included; return the checked submit request.

        Sends nothing. ``marker`` is the task instance's (a random one when not given).
        """
        request = checks.check_submit(
            parse_config(self.config),
            description=self.description,
            jobs_submitted=self.jobs_submitted,
            group=self.group,
            extra_submit_fields=merged_extra_fields(
                self.extra_submit_fields,
                priority=self.priority,
                start_suspended=self.start_suspended,
                debug=self.debug,
            ),
            marker=marker,
            low_level=self.low_level,
            materialize=False,  # execute() materializes once the XComs are pushed
            timeout=self.submit_timeout,
            reconcile_grace=self.reconcile_grace,
            tasks_per_job=self.tasks_per_job,
            allow_large=self.allow_large,
        )
        self._check_wait_jobs(request.jobs_submitted)
        return request

    # ------------------------------------------------------------------------------------ execute

    @cached_property
    def hook(self) -> IceProdHook:
        """The hook of this task (built on first use, after the templates are rendered)."""
        from airflow_provider_iceprod.hooks.iceprod import IceProdHook

        return IceProdHook(self.iceprod_conn_id, **self.hook_params)

    def execute(self, context: Context) -> Any:
        marker = marker_for_context(context)
        request = self.prepare(marker)
        deadline_after = seconds(self.wait_timeout, "wait_timeout")
        options = self._wait_options() if self.wait_for_completion else None
        if self.is_dry_run:
            self.log.info(
                "dry_run: the config is valid; nothing was submitted. %s job(s), group %r, extra fields %s. "
                "Final config:\n%s",
                request.jobs_submitted,
                request.group,
                request.extra,
                json.dumps(request.config, indent=2, sort_keys=True),
            )
            return request.config

        state = SubmitState(context, self.log)
        result, fresh = self._submit_or_reattach(state, marker, request)
        self._dataset_id = result.dataset_id
        push_dataset_xcoms(
            context["ti"], dataset_id=result.dataset_id, dataset=result.dataset, url=result.url
        )
        self.log.info(
            "IceProd dataset %s (%s) %s: %s",
            result.dataset,
            result.dataset_id,
            "submitted" if fresh else "reattached from an earlier try",
            result.url,
        )
        # After the XComs, so the link shows while IceProd creates the jobs.
        if self.materialize and request.jobs_submitted == 0:
            self.log.info("materialize=True: nothing to materialize, the dataset has no jobs yet.")
        elif self.materialize and (fresh or not self.hook.job_counts(result.dataset_id)):
            self.log.info(
                "Asking IceProd to materialize the first jobs of dataset %s now.", result.dataset_id
            )
            self.hook.materialize(result.dataset_id, wait=True)

        if options is None:
            self._emit_assets(context, result.dataset_id, result.dataset, status="submitted")
            return result.dataset_id
        deadline = time.time() + deadline_after if deadline_after else None
        return self._wait(context, result.dataset_id, options, deadline)

    # ------------------------------------------------------------------------- submit / reattach

    def _submit_or_reattach(
        self, state: SubmitState, marker: str, request: SubmitRequest
    ) -> tuple[SubmitResult, bool]:
        """Returns the dataset and whether this try created it."""
        result = reattach_from_state(self.hook, state, self.log)
        if result is None:
            result = self._submit(state, request)
        if not result.reattached:
            return result, True
        return self._apply_existing_policy(state, marker, request, result)

    def _submit(self, state: SubmitState, request: SubmitRequest) -> SubmitResult:
        """Submit, or reattach through the hook: an earlier try's request id (IceProd forgets those
        after about a day; the hook then falls back), then the description marker."""

        def on_request(request_id: str) -> None:
            state.set(REQUEST_ID_KEY, request_id)
            self.log.info("IceProd accepted submit request %s; waiting for the dataset.", request_id)

        def on_send(when: float) -> None:
            state.set_time(SENT_AT_KEY, when)

        request_id = state.get(REQUEST_ID_KEY)
        sent_at = state.get_time(SENT_AT_KEY)
        result = self.hook.submit(
            request,
            on_request=on_request,
            resume_request_id=request_id,
            # With a store, a try that finds no send time knows no earlier try sent a submit.
            fresh=state.available and sent_at is None and request_id is None,
            sent_at=sent_at,
            on_send=on_send,
        )
        state.set(DATASET_ID_KEY, result.dataset_id)
        return result

    def _apply_existing_policy(
        self, state: SubmitState, marker: str, request: SubmitRequest, result: SubmitResult
    ) -> tuple[SubmitResult, bool]:
        """``on_existing_failed`` for a dataset an earlier try created."""
        hook = self.hook
        progress = hook.dataset_progress(result.dataset_id)
        problem = existing_problem(
            progress,
            target_states=self.target_states if self.wait_for_completion else (),
            # IceProd suspends an empty dataset by itself: nothing failed (docs/iceprod-quirks.md, 10)
            starts_suspended=self._starts_suspended() or request.jobs_submitted == 0,
        )
        if problem is None:
            self.log.info(
                "Reattached to dataset %s created by an earlier try (status %r).",
                result.dataset,
                progress.status,
            )
            return result, False
        what = (
            f"IceProd dataset {result.dataset} ({result.dataset_id}), created by an earlier try, is {problem}"
        )
        if self.on_existing_failed == "fail":
            raise IceProdDatasetFailedError(
                f"{what} and on_existing_failed='fail'. Reset it (IceProdDatasetActionOperator "
                "action='retry_failed' or 'resume'), or set on_existing_failed='reset' or 'resubmit'.",
                dataset_id=result.dataset_id,
            )
        if self.on_existing_failed == "reset":
            if problem == "suspended" or progress.status == "errors":
                # the dataset-level reset (the website's Reset): dataset_cleanup has often turned the
                # failed tasks of jobs in errors into suspended ones, which a task reset misses
                self.log.info("%s: resetting it (on_existing_failed='reset').", what)
                hook.resume_dataset(result.dataset_id)
            else:
                self.log.info("%s: retrying its failed tasks (on_existing_failed='reset').", what)
                hook.retry_failed_tasks(result.dataset_id)
            return result, False
        # resubmit: retire the old dataset's marker so lookups find only the new dataset
        self.log.info("%s: submitting a new dataset (on_existing_failed='resubmit').", what)
        supersede(hook, result.dataset_id, marker, self.log)
        state.delete(DATASET_ID_KEY, REQUEST_ID_KEY, SENT_AT_KEY)
        new = self._submit(state, request)
        if new.reattached:
            raise IceProdDatasetFailedError(
                "Resubmitting failed: the marker lookup still finds dataset "
                f"{new.dataset} ({new.dataset_id}).",
                dataset_id=new.dataset_id,
            )
        return new, True

    def _starts_suspended(self) -> bool:
        return bool(self.start_suspended) or (self.extra_submit_fields or {}).get("status") == "suspended"

    # ------------------------------------------------------------------------------------- wait

    def _wait(self, context: Context, dataset_id: str, options: WaitOptions, deadline: float | None) -> Any:
        from airflow_provider_iceprod import wait_loop, waiting

        if not self.deferrable:
            self._waiting = True
            try:
                event = wait_loop.wait_for_dataset(
                    self.hook, dataset_id, options, deadline=deadline, log=self.log
                )
            finally:
                self._waiting = False
            return self._finish(context, event)

        # Check once before deferring: a reattached dataset may already be done.
        state = waiting.WaitState()
        try:
            verdict, progress = wait_loop.poll_once(self.hook, dataset_id, options, state)
        except IceProdTransientError as exc:
            self.log.warning("Could not check the dataset before deferring (%s); deferring anyway.", exc)
        else:
            self.log.info("%s", waiting.progress_line(progress, state, force=True))
            if verdict.done:
                return self._finish(context, waiting.event_result(waiting.verdict_event(verdict, progress)))
        from airflow_provider_iceprod.triggers.dataset import IceProdDatasetTrigger

        self.defer(
            trigger=IceProdDatasetTrigger(
                dataset_id=dataset_id,
                iceprod_conn_id=self.iceprod_conn_id,
                wait_options=options.to_dict(),
                deadline=deadline,
                hook_params=self.hook_params,
                cancel_on_kill=self.cancel_on_kill,
                wait_state=state.to_dict(),
            ),
            method_name="execute_complete",
            timeout=None,  # the deadline is enforced by the trigger, so execute_complete always runs
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger fired: raise on failure events, return the dataset id."""
        from airflow_provider_iceprod.wait_loop import complete_counts
        from airflow_provider_iceprod.waiting import event_result

        return self._finish(context, event_result(complete_counts(self.hook, event)))

    def _finish(self, context: Context, event: dict[str, Any]) -> str:
        dataset_id = str(event["dataset_id"])
        progress = event.get("progress") or {}
        self.log.info("%s", event.get("message") or f"IceProd dataset {dataset_id} is done.")
        dataset = progress.get("dataset") or self.hook.get_dataset(dataset_id).dataset
        self._emit_assets(
            context,
            dataset_id,
            int(dataset),
            status=decided_status(progress, self.target_states),
            job_counts=progress.get("job_counts") or {},
            task_counts=progress.get("task_counts") or {},
        )
        return dataset_id

    def _emit_assets(
        self, context: Context, dataset_id: str, dataset: int, *, status: str, **more: Any
    ) -> None:
        from airflow_provider_iceprod.assets import asset_event_extra

        if not self.asset_alias and not self.outlets:
            return
        api_url = self.hook.settings.api_url
        extra = asset_event_extra(dataset_id, dataset, self.hook.dataset_url(dataset_id), status, **more)
        emit_asset_events(
            context, outlets=self.outlets, asset_alias=self.asset_alias, api_url=api_url, extra=extra
        )

    # ----------------------------------------------------------------------------------- on_kill

    def on_kill(self) -> None:
        """Best effort: suspend the dataset this task was waiting on. Idempotent; never raises."""
        try:
            if not (self.cancel_on_kill and self._waiting and self._dataset_id) or self._kill_handled:
                return
            self._kill_handled = True
            dataset = self.hook.get_dataset(self._dataset_id)
            if dataset.status in ("complete", "suspended"):
                self.log.info("on_kill: dataset %s is already %s.", dataset.dataset, dataset.status)
                return
            self.log.info("on_kill: suspending IceProd dataset %s (%s).", dataset.dataset, dataset.dataset_id)
            self.hook.suspend_dataset(self._dataset_id)
            self.log.info("on_kill: dataset %s suspended; resume it with action='resume'.", dataset.dataset)
        except Exception as exc:
            with contextlib.suppress(Exception):
                self.log.warning("on_kill: could not suspend IceProd dataset %s: %s", self._dataset_id, exc)
