"""One function per IceProd endpoint: method, path, query, body and how to read the answer.

Each returns a :class:`Call` (sans-IO: nothing is sent here); arguments are checked with
:mod:`~airflow_provider_iceprod.api.checks` first. The hook's drivers send calls and feed the parsed
answers to the flows of :mod:`~airflow_provider_iceprod.api.flows`. See ``docs/architecture.md``
("The api package").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from airflow_provider_iceprod.api.checks import (
    STATUS_ACTIONS,
    action_name,
    action_request_id,
    bad,
    finite_number,
    id_list,
    joined,
    object_id,
    one_of,
    positive_int,
    task_requirements,
)
from airflow_provider_iceprod.models import (
    DATASET_STATUSES,
    JOB_STATUSES,
    TASK_STATUSES,
    ActionRequest,
    Dataset,
    Job,
    Task,
)

API = "api"
ACTIONS = "actions"


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Call:
    """One IceProd request. ``parse`` turns the decoded JSON answer into the result."""

    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    parse: Callable[[Any], Any] = field(default=_identity, compare=False)
    idempotent: bool | None = None
    service: str = API  # API or ACTIONS (the actions URL)


def _ds(dataset_id: str) -> str:
    return f"/datasets/{object_id(dataset_id)}"


def _counts(doc: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in (doc or {}).items()}


def _none(_: Any) -> None:
    return None


def _query(**params: Any) -> dict[str, Any]:
    """Query parameters, those left out (None) dropped."""
    return {key: value for key, value in params.items() if value is not None}


def _index(job_index: Any) -> int | None:
    return None if job_index is None else positive_int(job_index, "job_index", allow_zero=True)


def _one(dataset_id: str, kind: str, ident: str) -> str:
    """The path of one job or task (``kind``): ``/datasets/{id}/{kind}s/{kind_id}``."""
    return f"{_ds(dataset_id)}/{kind}s/{object_id(ident, f'{kind}_id')}"


def _list(
    dataset_id: str, kind: str, statuses: tuple[str, ...], status: Any, job_index: Any, keys: Any, **more: Any
) -> Call:
    """``GET /datasets/{id}/{kind}s`` filtered by status, job_index (and ``more``), ``keys`` fields."""
    params = _query(
        status=joined(status, "status", statuses),
        job_index=_index(job_index),
        keys=joined(keys, "keys"),
        **more,
    )
    return Call("GET", f"{_ds(dataset_id)}/{kind}s", params=params, parse=dict)


def _set_status(path: str, status: str, statuses: tuple[str, ...]) -> Call:
    """``PUT <path>/status`` of a dataset, job or task (IceProd checks the transition)."""
    return Call("PUT", f"{path}/status", json={"status": one_of(status, statuses, "status")}, parse=_none)


def _bulk_status(
    dataset_id: str, kind: str, statuses: tuple[str, ...], status: str, ids: Iterable[str]
) -> Call:
    """``POST .../{kind}_actions/bulk_status/{status}`` with the ids as ``{"<kind>s": [...]}``."""
    status = one_of(status, statuses, "status")
    body = {f"{kind}s": id_list(ids, f"{kind}_ids")}
    return Call("POST", f"{_ds(dataset_id)}/{kind}_actions/bulk_status/{status}", json=body, parse=_none)


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------


def list_datasets(*, status: Any = None, users: Any = None, groups: Any = None, keys: Any = None) -> Call:
    params = _query(
        status=joined(status, "status", DATASET_STATUSES),
        users=joined(users, "users"),
        groups=joined(groups, "groups"),
        keys=joined(keys, "keys"),
    )
    return Call("GET", "/datasets", params=params, parse=dict)


def get_dataset(dataset_id: str) -> Call:
    return Call("GET", _ds(dataset_id), parse=Dataset.from_api)


def create_dataset(body: Mapping[str, Any]) -> Call:
    """``POST /datasets`` (low-level submit; not idempotent) -> the new dataset id."""
    return Call(
        "POST",
        "/datasets",
        json=dict(body),
        parse=lambda doc: object_id(str(doc["result"])),
        idempotent=False,
    )


def get_config(dataset_id: str) -> Call:
    return Call("GET", f"/config/{object_id(dataset_id)}", parse=dict)


def put_config(dataset_id: str, config: Mapping[str, Any]) -> Call:
    return Call("PUT", f"/config/{object_id(dataset_id)}", json=dict(config))


def dataset_summaries() -> Call:
    return Call("GET", "/dataset_summaries/status", parse=dict)


def set_dataset_status(dataset_id: str, status: str) -> Call:
    return _set_status(_ds(dataset_id), status, DATASET_STATUSES)


def set_priority(dataset_id: str, priority: Any) -> Call:
    body = {"priority": finite_number(priority, "priority")}  # a float: IceProd refuses 1; negative is fine
    return Call("PUT", f"{_ds(dataset_id)}/priority", json=body, parse=_none)


def set_description(dataset_id: str, description: Any) -> Call:
    if not isinstance(description, str):
        raise bad("description", f"description must be a string, got {type(description).__name__}.")
    return Call("PUT", f"{_ds(dataset_id)}/description", json={"description": description}, parse=_none)


def set_jobs_submitted(dataset_id: str, jobs_submitted: Any) -> Call:
    body = {"jobs_submitted": positive_int(jobs_submitted, "jobs_submitted")}
    return Call("PUT", f"{_ds(dataset_id)}/jobs_submitted", json=body, parse=_none)


def truncate(dataset_id: str) -> Call:
    return Call("POST", f"{_ds(dataset_id)}/dataset_actions/truncate", parse=_none)


def set_task_requirements(dataset_id: str, task_name: str, requirements: Mapping[str, Any]) -> Call:
    if not isinstance(task_name, str) or not task_name:
        raise bad("task_name", f"task_name must be a task's name, got {task_name!r}.")
    body = task_requirements(requirements)
    path = f"{_ds(dataset_id)}/task_actions/bulk_requirements/{quote(task_name, safe='')}"
    return Call("PATCH", path, json=body, parse=_none)


# --------------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------------


def list_jobs(dataset_id: str, *, status: Any = None, job_index: Any = None, keys: Any = None) -> Call:
    return _list(dataset_id, "job", JOB_STATUSES, status, job_index, keys)


def get_job(dataset_id: str, job_id: str) -> Call:
    return Call("GET", _one(dataset_id, "job", job_id), parse=Job.from_api)


def set_job_status(dataset_id: str, job_id: str, status: str) -> Call:
    return _set_status(_one(dataset_id, "job", job_id), status, JOB_STATUSES)


def bulk_job_status(dataset_id: str, status: str, job_ids: Iterable[str]) -> Call:
    return _bulk_status(dataset_id, "job", JOB_STATUSES, status, job_ids)


def bulk_job_action(dataset_id: str, action: str, job_ids: Iterable[str] | None = None) -> Call:
    """``suspend``, ``reset`` or ``hard_reset`` jobs (all jobs when ``job_ids`` is None)."""
    action = one_of(action, STATUS_ACTIONS, "action")
    body = {"jobs": id_list(job_ids, "job_ids")} if job_ids is not None else {}
    return Call("POST", f"{_ds(dataset_id)}/job_actions/bulk_{action}", json=body, parse=_none)


def job_summaries(dataset_id: str) -> Call:
    return Call("GET", f"{_ds(dataset_id)}/job_summaries/status", parse=dict)


def job_counts(dataset_id: str) -> Call:
    return Call("GET", f"{_ds(dataset_id)}/job_counts/status", parse=_counts)


# --------------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------------


def list_tasks(
    dataset_id: str,
    *,
    status: Any = None,
    name: Any = None,
    job_id: str | None = None,
    job_index: Any = None,
    keys: Any = None,
) -> Call:
    job = None if job_id is None else object_id(job_id, "job_id")
    return _list(
        dataset_id, "task", TASK_STATUSES, status, job_index, keys, name=joined(name, "name"), job_id=job
    )


def get_task(dataset_id: str, task_id: str) -> Call:
    return Call("GET", _one(dataset_id, "task", task_id), parse=Task.from_api)


def set_task_status(dataset_id: str, task_id: str, status: str) -> Call:
    return _set_status(_one(dataset_id, "task", task_id), status, TASK_STATUSES)


def bulk_task_status(dataset_id: str, status: str, task_ids: Iterable[str]) -> Call:
    return _bulk_status(dataset_id, "task", TASK_STATUSES, status, task_ids)


def bulk_task_action(
    dataset_id: str,
    action: str,
    *,
    job_ids: Iterable[str] | None = None,
    task_ids: Iterable[str] | None = None,
) -> Call:
    """``suspend``, ``reset`` or ``hard_reset`` tasks, selected by ``job_ids`` or ``task_ids`` (or all)."""
    action = one_of(action, STATUS_ACTIONS, "action")
    if job_ids is not None and task_ids is not None:
        raise bad("task_ids", "Select tasks by job_ids or by task_ids, not both.")
    body: dict[str, Any] = {}
    if job_ids is not None:
        body["jobs"] = id_list(job_ids, "job_ids")
    if task_ids is not None:
        body["tasks"] = id_list(task_ids, "task_ids")
    return Call("POST", f"{_ds(dataset_id)}/task_actions/bulk_{action}", json=body, parse=_none)


def task_summaries(dataset_id: str) -> Call:
    return Call("GET", f"{_ds(dataset_id)}/task_summaries/status", parse=dict)


def task_counts(dataset_id: str) -> Call:
    return Call("GET", f"{_ds(dataset_id)}/task_counts/status", parse=_counts)


def _counts_by_name(doc: Any) -> dict[str, dict[str, int]]:
    return {str(name): _counts(counts) for name, counts in (doc or {}).items()}


def task_counts_by_name(dataset_id: str) -> Call:
    return Call("GET", f"{_ds(dataset_id)}/task_counts/name_status", parse=_counts_by_name)


def task_stats(dataset_id: str) -> Call:
    return Call("GET", f"{_ds(dataset_id)}/task_stats", parse=dict)


def task_logs(
    dataset_id: str, task_id: str, *, num: Any = None, group: bool = True, order: str | None = None
) -> Call:
    params = _query(
        num=None if num is None else positive_int(num, "num"),
        group="true" if group else None,
        order=None if order is None else one_of(order, ("asc", "desc"), "order"),
    )
    return Call(
        "GET",
        f"{_one(dataset_id, 'task', task_id)}/logs",
        params=params,
        parse=lambda doc: list((doc or {}).get("logs", [])),
    )


# --------------------------------------------------------------------------------------------------
# /actions/*
# --------------------------------------------------------------------------------------------------


def post_action(name: str, body: Mapping[str, Any], *, idempotent: bool | None = None) -> Call:
    """``POST /actions/<name>`` -> the request id.

    Only ``materialization`` is deduplicated by IceProd, so only it is idempotent by default: any
    other action whose answer is lost may have been recorded, and is never re-sent blindly.
    """
    if idempotent is None:
        idempotent = action_name(name) == "materialization"
    return Call(
        "POST",
        f"/actions/{action_name(name)}",
        json=dict(body),
        parse=lambda doc: str(doc["result"]),
        idempotent=idempotent,
        service=ACTIONS,
    )


def action_counts(name: str) -> Call:
    """``GET /actions/<name>`` -> IceProd's global request counts per status (all users)."""
    return Call("GET", f"/actions/{action_name(name)}", parse=_counts, service=ACTIONS)


def get_action(name: str, request_id: str) -> Call:
    path = f"/actions/{action_name(name)}/{action_request_id(request_id)}"
    return Call("GET", path, parse=lambda doc: ActionRequest.from_api(name, doc), service=ACTIONS)
