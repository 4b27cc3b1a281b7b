"""``IceProdDatasetActionOperator``: one action on an IceProd dataset, waited for, with a result.

| action | `value` | what happens |
|---|---|---|
| `suspend` | - | the dataset, its jobs and tasks are suspended (`/actions/dataset_status`) |
| `resume` | - | a suspended or errors dataset goes back to processing (1) |
| `retry_failed` | - | a dataset in `errors` is reset as the website's Reset does (`/actions/dataset_status`); otherwise its failed tasks are reset (`/actions/task_status`); skipped when none failed |
| `hard_reset` | - | every task runs again, complete ones too |
| `truncate` | - | no new jobs; the dataset completes when its existing jobs do |
| `set_priority` | a number, e.g. `0.8` | the dataset priority |
| `set_description` | a non-empty string | the description |
| `add_jobs` | a positive integer (above 1,000,000 only with `allow_large=True`) | that many jobs are added to `jobs_submitted`, once (3) |
| `set_requirements` | `{task_name: {resource: value}}` | requirements of the tasks of that name (2) |

(1) Its suspended and failed tasks are reset. A processing dataset is left alone: IceProd's reset
would restart its running tasks. (2) Resources: `cpu`, `gpu` (int), `memory`, `disk` (GB), `time`
(hours), `os` (list of str), `site` (str). (3) The new total is kept in the task state store
(Airflow 3.3+) before it is sent, so a retried task sets that total instead of adding again.

Every argument is checked before any request. A change IceProd's dataset state machine forbids
(e.g. resuming or suspending a `complete` dataset) fails with a clear error and is not retried.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_iceprod.api import checks
from airflow_provider_iceprod.exceptions import (
    IceProdActionError,
    IceProdConfigError,
    IceProdDatasetFailedError,
    IceProdNotFoundError,
    IceProdPermissionError,
    IceProdValidationError,
)
from airflow_provider_iceprod.hook_params import check_hook_params
from airflow_provider_iceprod.links import IceProdDatasetLink, push_dataset_xcoms
from airflow_provider_iceprod.operators._common import emit_asset_events, outlets_with_alias
from airflow_provider_iceprod.operators._resume import SubmitState

#: Task-state-store key (plus ``:<dataset id>``) of the ``jobs_submitted`` an ``add_jobs`` sets.
ADD_JOBS_TARGET_KEY = "iceprod_add_jobs_target"

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_iceprod.hooks.iceprod import IceProdHook
    from airflow_provider_iceprod.models import ActionRequest, DatasetProgress

#: action -> what its ``value`` must be (None: no value)
ACTIONS: dict[str, str | None] = {
    "suspend": None,
    "resume": None,
    "retry_failed": None,
    "hard_reset": None,
    "truncate": None,
    "set_priority": "a number, e.g. 0.8",
    "set_description": "a non-empty string",
    "add_jobs": "a positive integer: the number of jobs to add",
    "set_requirements": "a dict {task_name: {resource: value}}",
}
#: IceProd's texts for requests its state machine refuses (kept verbatim in the error).
_REFUSALS = ("state transition", "cannot truncate", "must be larger than before", "is immutable")


class IceProdActionRejectedError(IceProdActionError, AirflowFailException):
    """IceProd refused the action for this dataset's state; retrying the task will not change that."""


def _action_list() -> str:
    return ", ".join(ACTIONS)


def _requirements(value: Any) -> dict[str, dict[str, Any]]:
    """``{task_name: {resource: value}}``, each task's resources checked by IceProd's rules."""
    if not isinstance(value, Mapping) or not value:
        raise IceProdConfigError(
            f"set_requirements needs value={{task_name: {{resource: value}}}}, got {value!r}.", field="value"
        )
    checked: dict[str, dict[str, Any]] = {}
    for task_name, reqs in value.items():
        if not isinstance(task_name, str) or not task_name:
            raise IceProdConfigError(
                f"set_requirements: task names must be strings, got {task_name!r}.", field="value"
            )
        checked[task_name] = checks.task_requirements(reqs, f"value[{task_name!r}]")
    return checked


def validate_action(action: Any, value: Any, *, allow_large: bool = False) -> tuple[str, Any]:
    """Check ``action`` and its ``value``; return them normalised. Raises ``IceProdConfigError``."""
    if not isinstance(action, str) or action.strip() not in ACTIONS:
        raise IceProdConfigError(
            f"Unknown IceProd dataset action {action!r}; valid actions: {_action_list()}.", field="action"
        )
    action = action.strip()
    expected = ACTIONS[action]
    if expected is None:
        if value is not None:
            raise IceProdConfigError(f"Action {action!r} takes no value, got value={value!r}.", field="value")
        return action, None
    if value is None:
        raise IceProdConfigError(f"Action {action!r} needs value= {expected}.", field="value")
    if action == "set_priority":
        return action, checks.finite_number(value, "value")  # IceProd accepts negative priorities
    if action == "set_description":
        if not isinstance(value, str) or not value.strip():
            raise IceProdConfigError(
                f"Action 'set_description' needs value= {expected}, got {value!r}.", field="value"
            )
        return action, value
    if action == "add_jobs":
        return action, checks.job_count(value, "value", allow_large=allow_large)
    return action, _requirements(value)


def _forbidden(action: str, status: str) -> str | None:
    """Client-side check against IceProd's dataset state machine (complete is final)."""
    if status == "complete" and action in ("suspend", "resume"):
        return (
            f"IceProd's dataset state machine does not allow '{action}' on a complete dataset "
            "(complete is a final status; use 'hard_reset' to run it again)."
        )
    return None


class IceProdDatasetActionOperator(BaseOperator):
    """Run one action on an IceProd dataset and wait for IceProd to finish it.

    Args:
        action: one of ``suspend``, ``resume``, ``retry_failed``, ``hard_reset``, ``truncate``,
            ``set_priority``, ``set_description``, ``add_jobs``, ``set_requirements`` (templated).
        dataset: the dataset id (32 hex) or number; templated, so it can come from XCom, e.g.
            ``"{{ ti.xcom_pull(task_ids='submit', key='dataset_id') }}"`` or ``submit.output``.
        value: the action's argument where it needs one (templated), see the module docs.
        iceprod_conn_id: the Airflow connection (templated).
        asset_alias: emit an asset event for ``iceprod://<api host>/datasets/<number>`` through
            ``AssetAlias(asset_alias)`` on success.
        hook_params: ``IceProdHook`` keyword arguments (``retry_limit``, ``retry_delay``,
            ``max_delay``, ``retry_after_cap``, ``timeout``, ``poll_interval`` of IceProd
            ``/actions`` requests); plain numbers, checked when the DAG is parsed.
        allow_large: let ``add_jobs`` add (or reach) more than 1,000,000 jobs.

    Returns a dict: ``action``, ``dataset_id``, ``dataset``, ``status_before``, ``status``,
    ``job_counts``, ``task_counts`` (after the action), ``changed`` (False when nothing had to be
    done), ``request_id`` (for ``/actions`` requests), ``message``; ``jobs_submitted`` for ``add_jobs``.
    """

    template_fields: Sequence[str] = ("action", "dataset", "value", "iceprod_conn_id")
    operator_extra_links = (IceProdDatasetLink(),)
    ui_color = "#e6f2e0"

    def __init__(
        self,
        *,
        action: str,
        dataset: str | int,
        value: Any = None,
        iceprod_conn_id: str = "iceprod_default",
        asset_alias: str | None = None,
        hook_params: dict[str, Any] | None = None,
        allow_large: bool = False,
        **kwargs: Any,
    ) -> None:
        kwargs["outlets"] = outlets_with_alias(kwargs.get("outlets"), asset_alias)
        super().__init__(**kwargs)
        self.allow_large = bool(allow_large)
        if isinstance(action, str) and "{{" not in action and "{{" not in str(value):
            # fail at DAG parse time when nothing is templated
            validate_action(action, value, allow_large=self.allow_large)
        self.action = action
        self.dataset = dataset
        self.value = value
        self.iceprod_conn_id = iceprod_conn_id
        self.asset_alias = asset_alias
        self.hook_params = check_hook_params(hook_params)

    @cached_property
    def hook(self) -> IceProdHook:
        """The hook of this task (built on first use, after the templates are rendered)."""
        from airflow_provider_iceprod.hooks.iceprod import IceProdHook

        return IceProdHook(self.iceprod_conn_id, **self.hook_params)

    def execute(self, context: Context) -> dict[str, Any]:
        action, value = validate_action(self.action, self.value, allow_large=self.allow_large)
        ref = checks.dataset_ref(self.dataset)
        hook = self.hook
        before = self._progress(hook, ref)
        url = hook.dataset_url(before.dataset_id)
        push_dataset_xcoms(context["ti"], dataset_id=before.dataset_id, dataset=before.dataset, url=url)
        label = f"IceProd dataset {before.dataset} ({before.dataset_id})"
        self.log.info("%s is %s; action %s. %s", label, before.status, action, url)

        refusal = _forbidden(action, before.status)
        if refusal:
            raise IceProdActionRejectedError(f"Cannot {action} {label}: {refusal}")
        result: dict[str, Any] = {"changed": True, "request_id": None}
        state = SubmitState(context, self.log)
        try:
            result.update(self._run(hook, action, value, before, label, state))
        except (IceProdActionError, IceProdValidationError) as exc:
            rejected = self._rejected(exc, action, label, before.status)
            if rejected is None:
                raise
            raise rejected from exc

        after = hook.dataset_progress(before.dataset_id)
        result.update(
            action=action,
            dataset_id=before.dataset_id,
            dataset=before.dataset,
            status_before=before.status,
            status=after.status,
            job_counts=dict(after.job_counts),
            task_counts=dict(after.task_counts),
        )
        self.log.info(
            "%s: %s. Now %s, jobs %s, tasks %s.",
            label,
            result["message"],
            after.status,
            after.job_counts,
            after.task_counts,
        )
        self._emit_assets(context, hook, result, url)
        return result

    # ------------------------------------------------------------------------------- helpers

    def _progress(self, hook: IceProdHook, ref: str | int) -> DatasetProgress:
        try:
            return hook.dataset_progress(ref)
        except (IceProdNotFoundError, IceProdPermissionError) as exc:
            raise IceProdDatasetFailedError(
                f"IceProd dataset {ref} cannot be read with connection {self.iceprod_conn_id!r}: {exc}. "
                "IceProd answers 403 both when the token may not touch a dataset and when it does not exist; "
                "check the dataset id or number.",
                dataset_id=str(ref),
                status_code=exc.status_code,
                iceprod_message=exc.iceprod_message,
            ) from exc

    def _run(
        self,
        hook: IceProdHook,
        action: str,
        value: Any,
        before: DatasetProgress,
        label: str,
        state: SubmitState,
    ) -> dict[str, Any]:
        dataset_id = before.dataset_id
        request: ActionRequest | None = None
        if action == "suspend":
            request = hook.suspend_dataset(dataset_id)
            message = "suspended"
        elif action == "resume":
            if before.status == "processing":
                return {"changed": False, "message": "already processing; nothing to resume"}
            request = hook.resume_dataset(dataset_id)
            message = "resumed"
        elif action == "retry_failed":
            if before.tasks_failed == 0 and before.status != "errors":
                return {"changed": False, "message": "no failed tasks; nothing to retry"}
            if before.status == "errors":
                # the dataset-level reset (the website's Reset): dataset_cleanup has often turned the
                # failed tasks of jobs in errors into suspended ones, which a task reset would miss
                request = hook.resume_dataset(dataset_id)
                message = "reset the dataset (failed and suspended tasks run again)"
            else:
                request = hook.retry_failed_tasks(dataset_id)
                message = f"reset {before.tasks_failed} failed task(s)"
        elif action == "hard_reset":
            request = hook.hard_reset_dataset(dataset_id)
            message = "hard reset: every task will run again"
        elif action == "truncate":
            hook.truncate_dataset(dataset_id)
            message = "truncated: no new jobs will be created"
        elif action == "set_priority":
            hook.set_priority(dataset_id, value)
            message = f"priority set to {value}"
        elif action == "set_description":
            hook.set_description(dataset_id, value)
            message = "description updated"
        elif action == "add_jobs":
            total = self._add_jobs(hook, dataset_id, value, state)
            message = f"added {value} job(s); jobs_submitted is now {total}"
            if before.status == "suspended":
                # e.g. a dataset submitted with jobs_submitted=0 (docs/iceprod-quirks.md, 10)
                message += "; the dataset is suspended: IceProd creates the jobs once it is resumed"
                self.log.warning("%s: %s (action='resume').", label, message)
            return {"message": message, "jobs_submitted": total}
        else:
            return self._set_requirements(hook, dataset_id, value)
        out: dict[str, Any] = {"message": message}
        if request is not None:
            out["request_id"] = request.request_id
        return out

    def _add_jobs(self, hook: IceProdHook, dataset_id: str, count: int, state: SubmitState) -> int:
        """Add jobs once: the target total is stored before the PUT; a retry sets it again."""
        key = f"{ADD_JOBS_TARGET_KEY}:{dataset_id}"
        stored = state.get_time(key)
        target = int(stored) if stored is not None else None
        if target is not None:
            self.log.info(
                "An earlier try set the target jobs_submitted=%d; setting that, not adding again.", target
            )
        total = hook.add_jobs(
            dataset_id,
            count,
            allow_large=self.allow_large,
            target=target,
            on_target=lambda total: state.set_time(key, total),
        )
        state.delete(key)  # done: clearing the task adds again, on purpose
        return total

    def _set_requirements(
        self, hook: IceProdHook, dataset_id: str, value: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        from airflow_provider_iceprod.dataset_config import task_names

        known = task_names(hook.get_config(dataset_id))
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise IceProdConfigError(
                f"set_requirements: the dataset has no task(s) named {unknown}; its tasks are {known}.",
                field="value",
            )
        for name, reqs in value.items():
            try:
                hook.set_task_requirements(dataset_id, name, reqs)
            except IceProdNotFoundError:
                self.log.warning(
                    "No %r tasks exist yet (not materialized): IceProd creates them from the dataset config, "
                    "so change the config's requirements to affect them.",
                    name,
                )
        return {"message": f"requirements updated for {sorted(value)}"}

    @staticmethod
    def _rejected(exc: Exception, action: str, label: str, status: str) -> IceProdActionRejectedError | None:
        """A non-retryable error keeping IceProd's text, when IceProd refused the action itself."""
        text = str(getattr(exc, "iceprod_message", None) or exc)
        refused = isinstance(exc, IceProdValidationError) or any(r in text.lower() for r in _REFUSALS)
        if not refused:
            return None  # e.g. a worker failure: worth retrying
        return IceProdActionRejectedError(
            f"IceProd refused to {action} {label} (status {status!r}): {text}",
            request_id=getattr(exc, "request_id", None),
            status_code=getattr(exc, "status_code", None),
            iceprod_message=text,
        )

    def _emit_assets(self, context: Context, hook: IceProdHook, result: dict[str, Any], url: str) -> None:
        from airflow_provider_iceprod.assets import asset_event_extra

        if not self.asset_alias and not self.outlets:
            return
        extra = asset_event_extra(
            result["dataset_id"],
            result["dataset"],
            url,
            result["status"],
            action=result["action"],
            job_counts=result["job_counts"],
            task_counts=result["task_counts"],
        )
        emit_asset_events(
            context,
            outlets=self.outlets,
            asset_alias=self.asset_alias,
            api_url=hook.settings.api_url,
            extra=extra,
        )
