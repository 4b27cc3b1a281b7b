"""``IceProdSubmitDatasetOperator``: submit a dataset config to IceProd once, optionally wait for it.

Order of work in :meth:`~IceProdSubmitDatasetOperator.execute`:

1. render and parse the config (dict, ``.json``/``.yaml`` file, or Jinja), check it with
   :func:`~airflow_provider_iceprod.dataset_config.validate_config` and check the other arguments:
   nothing is sent before this passes (``dry_run=True`` stops here and returns the config);
2. reattach to the dataset an earlier try created (task state store on Airflow 3.3+, then the
   description marker), applying ``on_existing_failed`` when that dataset ended badly; or submit
   through ``/actions/submit`` and wait for the request to yield a dataset id;
3. push the XComs ``dataset_id``, ``dataset``, ``url`` and the extra-link XCom at once;
4. optionally wait for the dataset (the sensor's semantics, sync or deferrable).
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, conf

from airflow_provider_iceprod.exceptions import (
    IceProdConfigError,
    IceProdDatasetConfigError,
    IceProdDatasetFailedError,
    IceProdNotFoundError,
    IceProdPermissionError,
    IceProdTransientError,
)
from airflow_provider_iceprod.links import IceProdDatasetLink, push_dataset_xcoms
from airflow_provider_iceprod.operators._common import (
    emit_asset_events,
    finite_number,
    make_hook,
    outlets_with_alias,
    positive_int,
)
from airflow_provider_iceprod.operators._resume import (
    DATASET_ID_KEY,
    REQUEST_ID_KEY,
    SubmitState,
    marker_for_context,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_iceprod.hooks.iceprod import IceProdHook
    from airflow_provider_iceprod.models import DatasetProgress, SubmitResult
    from airflow_provider_iceprod.waiting import WaitOptions

GROUPS = ("users", "simprod", "filtering", "admin")
ON_EXISTING_FAILED = ("reset", "resubmit", "fail")
#: Optional ``POST /datasets`` fields IceProd accepts in ``extra_submit_fields``, with their types.
EXTRA_SUBMIT_FIELDS: dict[str, tuple[type, ...]] = {
    "priority": (int, float),
    "debug": (bool,),
    "jobs_immutable": (bool,),
    "always_active": (bool,),
    "status": (str,),
    "auth_groups_read": (list,),
}
SUPERSEDED_TAG = "airflow-superseded"


def parse_config(value: Any) -> dict[str, Any]:
    """The rendered ``config`` argument as a dict: a dict, or JSON / YAML text (a rendered file)."""
    if isinstance(value, Mapping):
        return copy.deepcopy(dict(value))
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise IceProdDatasetConfigError("The dataset config is empty.", field="config")
        try:
            parsed = json.loads(text)
        except ValueError:
            import yaml

            try:
                parsed = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise IceProdDatasetConfigError(
                    f"The dataset config is neither valid JSON nor valid YAML: {exc}", field="config"
                ) from None
        if isinstance(parsed, Mapping):
            return dict(parsed)
        raise IceProdDatasetConfigError(
            f"The dataset config must be a JSON/YAML object (or a .json/.yaml/.yml file name), got "
            f"{type(parsed).__name__}: {text[:80]!r}",
            field="config",
        )
    raise IceProdDatasetConfigError(
        f"The dataset config must be a dict, JSON/YAML text or a .json/.yaml/.yml file name, got "
        f"{type(value).__name__}.",
        field="config",
    )


def decided_status(progress: Mapping[str, Any], target_states: Sequence[str]) -> str:
    """The dataset status a successful wait decided on, for the asset event.

    IceProd's status when it is a target state; otherwise the wait ended on the job counts (every
    job complete, before IceProd's cron marks the dataset), which means ``complete``, even when the
    dataset read of that same poll still said ``processing``.
    """
    status = str(progress.get("status") or "")
    return status if status in target_states else "complete"


def _seconds(value: float | timedelta | None, field: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else finite_number(value, field=field)
    if seconds <= 0:
        raise IceProdConfigError(f"{field!r} must be > 0 seconds, got {value!r}.", field=field)
    return seconds


class IceProdSubmitDatasetOperator(BaseOperator):
    """Submit an IceProd dataset config, once per task instance; return the dataset id.

    Args:
        config: the dataset config: a dict, a ``.json``/``.yaml``/``.yml`` file name (relative
            to the DAG folder or ``template_searchpath``; rendered with Jinja), or JSON/YAML text.
            Templated. IceProd macros such as ``$(dataset)`` are left alone.
        description: the dataset description (templated). The operator appends a marker
            ``[airflow:<16 hex>]`` that lets a retried task find its dataset.
        jobs_submitted: number of jobs (positive integer, templated).
        group: ``users`` (default), ``simprod``, ``filtering`` or ``admin`` (templated); the token
            must be a member.
        iceprod_conn_id: the Airflow connection (templated).
        tasks_per_job: when given, the config must have exactly this many tasks.
        priority: dataset priority (a number), sent as an extra submit field.
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
            the hook's retries) before the task fails.
        cancel_on_kill: when the task is killed while waiting (marked failed/success, cleared),
            suspend the dataset it submitted (default ``True``; best effort, resumable with the
            ``resume`` action). In deferrable mode the trigger does this on Airflow 3.3+.
        asset_alias: emit an asset event for ``iceprod://<api host>/datasets/<number>`` through
            ``AssetAlias(asset_alias)`` on success.
        request_retry_limit: re-sends of a request after a transient error (hook retry policy).
        request_retry_delay: base delay of the exponential backoff, seconds.
        request_timeout: seconds per HTTP request.
        action_poll_interval: seconds between polls of IceProd ``/actions`` requests.
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
        wait_for_completion: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 60.0,
        wait_timeout: float | timedelta | None = None,
        target_states: Sequence[str] = ("complete",),
        on_suspended: str = "fail",
        stall_polls: int = 3,
        tolerate_errors: int = 3,
        cancel_on_kill: bool = True,
        asset_alias: str | None = None,
        request_retry_limit: int = 5,
        request_retry_delay: float = 1.0,
        request_timeout: float = 30.0,
        action_poll_interval: float = 5.0,
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
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.wait_timeout = wait_timeout
        self.target_states = tuple(target_states) if not isinstance(target_states, str) else (target_states,)
        self.on_suspended = on_suspended
        self.stall_polls = stall_polls
        self.tolerate_errors = tolerate_errors
        self.cancel_on_kill = cancel_on_kill
        self.asset_alias = asset_alias
        self.request_retry_limit = request_retry_limit
        self.request_retry_delay = request_retry_delay
        self.request_timeout = request_timeout
        self.action_poll_interval = action_poll_interval
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
            )
        except ValueError as exc:
            raise IceProdConfigError(f"Invalid wait option: {exc}", field="wait options") from None

    def _extra_fields(self) -> dict[str, Any]:
        extra = dict(self.extra_submit_fields or {})
        unknown = sorted(set(extra) - set(EXTRA_SUBMIT_FIELDS))
        if unknown:
            raise IceProdConfigError(
                f"extra_submit_fields: unknown field(s) {unknown}; IceProd accepts "
                f"{sorted(EXTRA_SUBMIT_FIELDS)} "
                "(description, jobs_submitted and group are arguments of their own).",
                field="extra_submit_fields",
            )
        if self.priority is not None:
            extra["priority"] = self.priority
        if self.start_suspended:
            extra["status"] = "suspended"
        if self.debug:
            extra["debug"] = True
        for key, value in extra.items():
            types = EXTRA_SUBMIT_FIELDS[key]
            if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
                raise IceProdConfigError(
                    f"extra_submit_fields[{key!r}] must be {' or '.join(t.__name__ for t in types)}, "
                    f"got {value!r}.",
                    field=f"extra_submit_fields.{key}",
                )
        if "priority" in extra:
            extra["priority"] = finite_number(extra["priority"], field="priority")  # IceProd wants a float
        if extra.get("status") not in (None, "processing", "suspended"):
            raise IceProdConfigError(
                "extra_submit_fields['status'] must be 'processing' or 'suspended', "
                f"got {extra['status']!r}.",
                field="extra_submit_fields.status",
            )
        return extra

    def prepare(self) -> dict[str, Any]:
        """Check every rendered argument; return the submit arguments. Sends nothing."""
        from airflow_provider_iceprod.dataset_config import validate_config

        config = parse_config(self.config)
        tasks_per_job = (
            None if self.tasks_per_job is None else positive_int(self.tasks_per_job, field="tasks_per_job")
        )
        # The hook sends "version": 3.2 on both submit paths, as IceProd's /actions/submit does.
        validate_config(config, strict=True, tasks_per_job=tasks_per_job, force_version=True)
        if not config.get("tasks"):  # IceProd's schema allows it, but the dataset could never run
            raise IceProdDatasetConfigError(
                "Validation error in config['tasks']: a dataset needs at least one task",
                field="config['tasks']",
            )
        if not isinstance(self.description, str) or not self.description.strip():
            raise IceProdConfigError(
                f"'description' must be a non-empty string, got {self.description!r}.", field="description"
            )
        group = self.group.strip() if isinstance(self.group, str) else self.group
        if group not in GROUPS:
            raise IceProdConfigError(
                f"'group' must be one of {list(GROUPS)}, got {self.group!r}.", field="group"
            )
        return {
            "config": config,
            "description": self.description.strip(),
            "jobs_submitted": positive_int(self.jobs_submitted, field="jobs_submitted"),
            "group": group,
            "extra_submit_fields": self._extra_fields() or None,
            "low_level": bool(self.low_level),
        }

    # ------------------------------------------------------------------------------------ execute

    def _hook(self) -> IceProdHook:
        return make_hook(
            self.iceprod_conn_id,
            retry_limit=self.request_retry_limit,
            retry_delay=self.request_retry_delay,
            timeout=self.request_timeout,
            poll_interval=self.action_poll_interval,
        )

    def execute(self, context: Context) -> Any:
        args = self.prepare()
        deadline_after = _seconds(self.wait_timeout, "wait_timeout")
        options = self._wait_options() if self.wait_for_completion else None
        if self.is_dry_run:
            self.log.info(
                "dry_run: the config is valid; nothing was submitted. %s job(s), group %r, extra fields %s. "
                "Final config:\n%s",
                args["jobs_submitted"],
                args["group"],
                args["extra_submit_fields"] or {},
                json.dumps(args["config"], indent=2, sort_keys=True),
            )
            return args["config"]

        hook = self._hook()
        state = SubmitState(context, self.log)
        marker = marker_for_context(context)
        result, fresh = self._submit_or_reattach(hook, state, marker, args)
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
        if self.materialize:
            # After the XComs, so the link shows while IceProd creates the jobs.
            if fresh:
                self._materialize(hook, result.dataset_id)
            else:
                self._materialize_if_empty(hook, result.dataset_id)

        if options is None:
            self._emit_assets(context, hook, result.dataset_id, result.dataset, status="submitted")
            return result.dataset_id
        deadline = time.time() + deadline_after if deadline_after else None
        return self._wait(context, hook, result.dataset_id, options, deadline)

    # ------------------------------------------------------------------------- submit / reattach

    def _submit_or_reattach(
        self, hook: IceProdHook, state: SubmitState, marker: str, args: dict[str, Any]
    ) -> tuple[SubmitResult, bool]:
        """Returns the dataset and whether this try created it."""
        result = self._reattach_from_state(hook, state)
        if result is None:
            result = self._submit(hook, state, marker, args)
        if not result.reattached:
            return result, True
        return self._apply_existing_policy(hook, state, marker, args, result)

    def _reattach_from_state(self, hook: IceProdHook, state: SubmitState) -> SubmitResult | None:
        """Reattach to the dataset id an earlier try stored (Airflow 3.3+). None: nothing usable."""
        from airflow_provider_iceprod.models import SubmitResult

        dataset_id = state.get(DATASET_ID_KEY)
        if not dataset_id:
            return None
        try:
            dataset = hook.get_dataset(dataset_id)
        except (IceProdNotFoundError, IceProdPermissionError) as exc:
            self.log.warning(
                "The dataset %s stored by an earlier try cannot be read (%s); looking it up by marker.",
                dataset_id,
                exc,
            )
            state.delete(DATASET_ID_KEY)
            return None
        return SubmitResult(
            request_id=state.get(REQUEST_ID_KEY),
            dataset_id=dataset.dataset_id,
            dataset=dataset.dataset,
            url=hook.dataset_url(dataset.dataset_id),
            reattached=True,
        )

    def _submit(
        self, hook: IceProdHook, state: SubmitState, marker: str, args: dict[str, Any]
    ) -> SubmitResult:
        """Submit, or reattach through the hook: an earlier try's request id (IceProd forgets those
        after about a day; the hook then falls back), then the description marker."""

        def on_request(request_id: str) -> None:
            state.set(REQUEST_ID_KEY, request_id)
            self.log.info("IceProd accepted submit request %s; waiting for the dataset.", request_id)

        result = hook.submit_dataset(
            args["config"],
            description=args["description"],
            jobs_submitted=args["jobs_submitted"],
            group=args["group"],
            extra_submit_fields=args["extra_submit_fields"],
            marker=marker,
            low_level=args["low_level"],
            materialize=False,  # done by execute() once the XComs are pushed
            on_request=on_request,
            timeout=self.submit_timeout,
            resume_request_id=state.get(REQUEST_ID_KEY),
        )
        state.set(DATASET_ID_KEY, result.dataset_id)
        return result

    def _materialize(self, hook: IceProdHook, dataset_id: str) -> None:
        self.log.info("Asking IceProd to materialize the first jobs of dataset %s now.", dataset_id)
        hook.materialize(dataset_id, wait=True)

    def _materialize_if_empty(self, hook: IceProdHook, dataset_id: str) -> None:
        if not hook.job_counts(dataset_id):
            self._materialize(hook, dataset_id)

    def _apply_existing_policy(
        self,
        hook: IceProdHook,
        state: SubmitState,
        marker: str,
        args: dict[str, Any],
        result: SubmitResult,
    ) -> tuple[SubmitResult, bool]:
        progress = hook.dataset_progress(result.dataset_id)
        problem = self._existing_problem(progress)
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
            if problem == "suspended":
                self.log.info("%s: resuming it (on_existing_failed='reset').", what)
                hook.resume_dataset(result.dataset_id)
            else:
                self.log.info("%s: retrying its failed tasks (on_existing_failed='reset').", what)
                hook.retry_failed_tasks(result.dataset_id)
            return result, False
        # resubmit: retire the old dataset's marker so lookups find only the new dataset
        self.log.info("%s: submitting a new dataset (on_existing_failed='resubmit').", what)
        self._supersede(hook, result.dataset_id, marker)
        state.delete(DATASET_ID_KEY, REQUEST_ID_KEY)
        new = self._submit(hook, state, marker, args)
        if new.reattached:
            raise IceProdDatasetFailedError(
                "Resubmitting failed: the marker lookup still finds dataset "
                f"{new.dataset} ({new.dataset_id}).",
                dataset_id=new.dataset_id,
            )
        return new, True

    def _existing_problem(self, progress: DatasetProgress) -> str | None:
        status = progress.status
        if self.wait_for_completion and status in self.target_states:
            return None
        if status == "suspended" and self._starts_suspended():
            return None  # suspended on purpose: start_suspended / extra status
        if status == "errors":
            return "in status 'errors'"
        if status == "suspended":
            return "suspended"
        if status == "processing" and progress.tasks_failed > 0 and progress.tasks_active == 0:
            return "stalled (failed tasks and nothing waiting, queued or processing)"
        return None

    def _starts_suspended(self) -> bool:
        return bool(self.start_suspended) or (self.extra_submit_fields or {}).get("status") == "suspended"

    def _supersede(self, hook: IceProdHook, dataset_id: str, marker: str) -> None:
        dataset = hook.get_dataset(dataset_id)
        tag = f"[airflow:{marker}]"
        if tag not in dataset.description:
            return
        new_description = dataset.description.replace(tag, f"[{SUPERSEDED_TAG}:{marker}]")
        hook.set_description(dataset_id, new_description)
        self.log.info("Dataset %s is marked superseded in its description.", dataset.dataset)

    # ------------------------------------------------------------------------------------- wait

    def _wait(
        self,
        context: Context,
        hook: IceProdHook,
        dataset_id: str,
        options: WaitOptions,
        deadline: float | None,
    ) -> Any:
        from airflow_provider_iceprod import waiting

        if not self.deferrable:
            self._waiting = True
            try:
                event = waiting.wait_for_dataset(hook, dataset_id, options, deadline=deadline, log=self.log)
            finally:
                self._waiting = False
            return self._finish(context, event)

        # Check once before deferring: a reattached dataset may already be done.
        state = waiting.WaitState()
        try:
            verdict, progress = waiting.poll_once(hook, dataset_id, options, state)
        except IceProdTransientError as exc:
            self.log.warning("Could not check the dataset before deferring (%s); deferring anyway.", exc)
        else:
            self.log.info("%s", waiting.describe_progress(progress, state))
            if verdict.done:
                return self._finish(context, waiting.event_result(waiting.verdict_event(verdict, progress)))
        from airflow_provider_iceprod.triggers.dataset import IceProdDatasetTrigger

        self.defer(
            trigger=IceProdDatasetTrigger(
                dataset_id=dataset_id,
                iceprod_conn_id=self.iceprod_conn_id,
                wait_options=options.to_dict(),
                deadline=deadline,
                retry=hook.retry_settings.to_dict(),
                cancel_on_kill=self.cancel_on_kill,
                wait_state=state.to_dict(),
            ),
            method_name="execute_complete",
            timeout=None,  # the deadline is enforced by the trigger, so execute_complete always runs
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        """Resume after the trigger fired: raise on failure events, return the dataset id."""
        from airflow_provider_iceprod.waiting import event_result

        return self._finish(context, event_result(event))

    def _finish(self, context: Context, event: dict[str, Any]) -> str:
        dataset_id = str(event["dataset_id"])
        progress = event.get("progress") or {}
        self.log.info("%s", event.get("message") or f"IceProd dataset {dataset_id} is done.")
        hook = self._hook()
        dataset = progress.get("dataset") or hook.get_dataset(dataset_id).dataset
        self._emit_assets(
            context,
            hook,
            dataset_id,
            int(dataset),
            status=decided_status(progress, self.target_states),
            job_counts=progress.get("job_counts") or {},
            task_counts=progress.get("task_counts") or {},
        )
        return dataset_id

    def _emit_assets(
        self, context: Context, hook: IceProdHook, dataset_id: str, dataset: int, *, status: str, **more: Any
    ) -> None:
        from airflow_provider_iceprod.assets import asset_event_extra

        if not self.asset_alias and not self.outlets:
            return
        api_url = hook.settings.api_url
        extra = asset_event_extra(dataset_id, dataset, hook.dataset_url(dataset_id), status, **more)
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
            hook = self._hook()
            dataset = hook.get_dataset(self._dataset_id)
            if dataset.status in ("complete", "suspended"):
                self.log.info("on_kill: dataset %s is already %s.", dataset.dataset, dataset.status)
                return
            self.log.info("on_kill: suspending IceProd dataset %s (%s).", dataset.dataset, dataset.dataset_id)
            hook.suspend_dataset(self._dataset_id)
            self.log.info("on_kill: dataset %s suspended; resume it with action='resume'.", dataset.dataset)
        except Exception as exc:
            with contextlib.suppress(Exception):
                self.log.warning("on_kill: could not suspend IceProd dataset %s: %s", self._dataset_id, exc)
