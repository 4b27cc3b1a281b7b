"""IceProd's API described once, without I/O.

Each IceProd call is a :class:`Call` (method, path, query, body, which server, how to read the answer).
Multi-step work (resolving a dataset number, waiting on an ``/actions/*`` request, submitting with
reconciliation, a dataset's progress) is written once as a generator that *yields* what it needs:

* a :class:`Call` -> the driver sends it and sends back the parsed answer (or throws the IceProd error
  into the generator, which may handle it);
* a tuple of calls -> the same, possibly concurrently; the answers come back as a list;
* :class:`Sleep` -> the driver sleeps (``time.sleep`` or ``asyncio.sleep``);
* :class:`NeedIdentity` -> the driver sends back the caller's
  :class:`~airflow_provider_iceprod.models.Identity`.

``IceProdHook`` has one sync driver and one async driver for all of them, so the sync and async
forms of every call share this logic. Input is validated here, before anything is sent.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

from airflow_provider_iceprod.exceptions import (
    IceProdActionError,
    IceProdAmbiguousError,
    IceProdConfigError,
    IceProdNotFoundError,
    IceProdTransientError,
)
from airflow_provider_iceprod.models import (
    DATASET_STATUSES,
    JOB_STATUSES,
    TASK_STATUSES,
    ActionRequest,
    Dataset,
    DatasetProgress,
    Identity,
    Job,
    SubmitResult,
    Task,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

API = "api"
ACTIONS = "actions"

GROUPS = ("users", "simprod", "filtering", "admin")
REQUIREMENT_KEYS = ("cpu", "gpu", "memory", "disk", "time", "os", "site")
ACTION_NAMES = ("dataset_status", "job_status", "task_status")
STATUS_ACTIONS = ("reset", "hard_reset", "suspend")
#: Extra ``POST /datasets`` fields (``extra_submit_fields``); core fields are set by the submit itself.
EXTRA_DATASET_FIELDS = ("priority", "debug", "jobs_immutable", "always_active", "status", "auth_groups_read")
DEFAULT_RECONCILE_GRACE = 120.0

_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
_MARKER = re.compile(r"^[^\[\]\s]{1,200}$")


class IceProdActionTimeoutError(IceProdTransientError):
    """An ``/actions/*`` request did not finish in time; it may still run. ``request_id`` names it."""

    def __init__(self, message: str, *, request_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.request_id = request_id


# --------------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class NeedIdentity:
    """Ask the driver who the token belongs to (decoded from the token, no IceProd call)."""


Step = Call | tuple[Call, ...] | Sleep | NeedIdentity
Flow = Generator[Step, Any, T]


@dataclass
class FlowContext:
    """What flows need from the hook besides I/O."""

    poll_interval: float = 5.0
    number_cache: dict[int, str] = field(default_factory=dict)  # dataset number -> id (never changes)
    dataset_url: Callable[[str], str] = lambda dataset_id: dataset_id


def single(call: Call) -> Flow[Any]:
    """A flow of one call (so the drivers only deal with flows)."""
    return (yield call)


# --------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------


def _bad(field_name: str, message: str) -> IceProdConfigError:
    return IceProdConfigError(message, field=field_name)


def object_id(value: Any, kind: str = "dataset_id") -> str:
    """A 32-hex IceProd id (dataset, job, task, log), checked before it goes into a URL."""
    if not isinstance(value, str) or not _HEX32.match(value):
        raise _bad(kind, f"{kind} must be a 32-character hex IceProd id, got {value!r}.")
    return value


def parse_ref(ref: Any) -> tuple[str | None, int | None]:
    """``(dataset_id, None)`` or ``(None, dataset_number)`` for a dataset reference."""
    if isinstance(ref, str):
        text = ref.strip()
        if _HEX32.match(text):
            return text, None
        if text.isdigit() and int(text) > 0:
            return None, int(text)
    elif isinstance(ref, int) and not isinstance(ref, bool) and ref > 0:
        return None, ref
    raise _bad(
        "dataset",
        f"A dataset is named by its 32-hex dataset_id or its number (a positive integer), got {ref!r}.",
    )


def _status(value: Any, allowed: Iterable[str], kind: str) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise _bad(kind, f"Unknown {kind} {value!r}; IceProd knows {', '.join(allowed)}.")
    return str(value)


def _joined(value: Any, kind: str, allowed: Iterable[str] | None = None) -> str | None:
    """IceProd's multi-value parameter: ``a|b|c``."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    if not items or not all(isinstance(item, str) and item and "|" not in item for item in items):
        raise _bad(kind, f"{kind} must be a string or a list of non-empty strings, got {value!r}.")
    if allowed is not None:
        for item in items:
            _status(item, allowed, kind)
    return "|".join(items)


def _id_list(values: Any, kind: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise _bad(kind, f"{kind} must be a list of 32-hex ids, got {values!r}.")
    ids = [object_id(v, kind) for v in values]
    if not ids:
        raise _bad(kind, f"{kind} is empty.")
    if len(ids) > 100_000:
        raise _bad(kind, f"{kind} has {len(ids)} ids; IceProd takes at most 100,000 per request.")
    return ids


def _positive_int(value: Any, kind: str, *, allow_zero: bool = False) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise _bad(kind, f"{kind} must be an integer {'>= 0' if allow_zero else '> 0'}, got {value!r}.")
    return int(value)


def _finite(value: Any, kind: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _bad(kind, f"{kind} must be a number, got {value!r}.")
    return float(value)


def marker_tag(marker: str) -> str:
    """The text put in a dataset's description to find it again: ``[airflow:<marker>]``."""
    if not isinstance(marker, str) or not _MARKER.match(marker):
        raise _bad(
            "marker", f"marker must be 1-200 characters without spaces or square brackets, got {marker!r}."
        )
    return f"[airflow:{marker}]"


def new_marker() -> str:
    """A random marker for direct hook use (operators derive theirs from the task instance)."""
    return f"hook-{uuid.uuid4().hex[:16]}"


def _extra_fields(extra: Mapping[str, Any] | None, *, low_level: bool) -> dict[str, Any]:
    """Check ``extra_submit_fields`` (IceProd silently drops unknown ones or fails them at run time)."""
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise _bad("extra_submit_fields", f"extra_submit_fields must be a dict, got {type(extra).__name__}.")
    allowed = (*EXTRA_DATASET_FIELDS, "username") if low_level else EXTRA_DATASET_FIELDS
    out: dict[str, Any] = {}
    for key, value in extra.items():
        if key not in allowed:
            raise _bad(
                "extra_submit_fields",
                f"extra_submit_fields key {key!r} is not allowed; use {', '.join(allowed)} "
                "(the core fields are arguments of the submit).",
            )
        if key == "priority":
            out[key] = _finite(value, "extra_submit_fields.priority")  # IceProd wants a float, not 1
        elif key in ("debug", "jobs_immutable", "always_active"):
            if not isinstance(value, bool):
                raise _bad("extra_submit_fields", f"extra_submit_fields.{key} must be true or false.")
            out[key] = value
        elif key == "status":
            out[key] = _status(value, DATASET_STATUSES, "extra_submit_fields.status")
        elif key == "auth_groups_read":
            if isinstance(value, str) or not all(isinstance(g, str) for g in value):
                raise _bad(
                    "extra_submit_fields", "extra_submit_fields.auth_groups_read must be a list of groups."
                )
            unknown = [g for g in value if g not in GROUPS]
            if unknown:  # IceProd would insert the dataset, fail, and retry: orphans (iceprod-quirks.md, 7)
                raise _bad(
                    "extra_submit_fields",
                    f"extra_submit_fields.auth_groups_read: unknown group(s) {unknown}; IceProd's groups "
                    f"are {', '.join(GROUPS)}.",
                )
            out[key] = list(value)
        else:
            if not isinstance(value, str) or not value:
                raise _bad("extra_submit_fields", "extra_submit_fields.username must be a user name.")
            out[key] = value
    return out


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------


def _ds(dataset_id: str) -> str:
    return f"/datasets/{object_id(dataset_id)}"


def list_datasets(*, status: Any = None, users: Any = None, groups: Any = None, keys: Any = None) -> Call:
    params = {
        "status": _joined(status, "status", DATASET_STATUSES),
        "users": _joined(users, "users"),
        "groups": _joined(groups, "groups"),
        "keys": _joined(keys, "keys"),
    }
    return Call("GET", "/datasets", params={k: v for k, v in params.items() if v is not None}, parse=dict)


def get_dataset_by_id(dataset_id: str) -> Call:
    return Call("GET", _ds(dataset_id), parse=Dataset.from_api)


def resolve_dataset_id(ref: Any, ctx: FlowContext) -> Flow[str]:
    """A dataset id for a reference. Numbers are global: list ids and numbers only (keys), cache them."""
    dataset_id, number = parse_ref(ref)
    if dataset_id is not None:
        return dataset_id
    assert number is not None
    if number not in ctx.number_cache:
        rows = yield list_datasets(keys=["dataset_id", "dataset"])
        for row in rows.values():
            if isinstance(row, dict) and "dataset" in row and "dataset_id" in row:
                ctx.number_cache[int(row["dataset"])] = str(row["dataset_id"])
    if number not in ctx.number_cache:
        raise IceProdNotFoundError(
            f"IceProd has no dataset number {number} that this token can read.", path="/datasets"
        )
    return ctx.number_cache[number]


def get_dataset(ref: Any, ctx: FlowContext) -> Flow[Dataset]:
    dataset_id = yield from resolve_dataset_id(ref, ctx)
    return (yield get_dataset_by_id(dataset_id))


def get_config(dataset_id: str) -> Call:
    return Call("GET", f"/config/{object_id(dataset_id)}", parse=dict)


def put_config(dataset_id: str, config: Mapping[str, Any]) -> Call:
    return Call("PUT", f"/config/{object_id(dataset_id)}", json=dict(config))


def dataset_summaries() -> Call:
    return Call("GET", "/dataset_summaries/status", parse=dict)


def set_dataset_status(dataset_id: str, status: str) -> Call:
    return Call(
        "PUT", f"{_ds(dataset_id)}/status", json={"status": _status(status, DATASET_STATUSES, "status")}
    )


def set_priority(dataset_id: str, priority: Any) -> Call:
    value = _finite(priority, "priority")
    if value < 0:
        raise _bad("priority", f"priority must be >= 0, got {priority!r}.")
    return Call("PUT", f"{_ds(dataset_id)}/priority", json={"priority": value})


def set_description(dataset_id: str, description: Any) -> Call:
    if not isinstance(description, str):
        raise _bad("description", f"description must be a string, got {type(description).__name__}.")
    return Call("PUT", f"{_ds(dataset_id)}/description", json={"description": description})


def set_jobs_submitted(dataset_id: str, jobs_submitted: int) -> Call:
    n = _positive_int(jobs_submitted, "jobs_submitted")
    return Call("PUT", f"{_ds(dataset_id)}/jobs_submitted", json={"jobs_submitted": n})


def truncate(dataset_id: str) -> Call:
    return Call("POST", f"{_ds(dataset_id)}/dataset_actions/truncate", parse=lambda _: None)


def add_jobs(ref: Any, count: Any, ctx: FlowContext) -> Flow[int]:
    """Grow ``jobs_submitted`` by ``count``; returns the new total."""
    count = _positive_int(count, "count")
    dataset = yield from get_dataset(ref, ctx)
    total = dataset.jobs_submitted + count
    yield set_jobs_submitted(dataset.dataset_id, total)
    return total


def set_task_requirements(dataset_id: str, task_name: str, requirements: Mapping[str, Any]) -> Call:
    if not isinstance(task_name, str) or not task_name:
        raise _bad("task_name", f"task_name must be a task's name, got {task_name!r}.")
    if not isinstance(requirements, Mapping) or not requirements:
        raise _bad("requirements", "requirements must be a non-empty dict, e.g. {'memory': 4.0}.")
    unknown = sorted(set(requirements) - set(REQUIREMENT_KEYS))
    if unknown:
        raise _bad(
            "requirements", f"Unknown requirement(s) {unknown}; IceProd knows {', '.join(REQUIREMENT_KEYS)}."
        )
    path = f"{_ds(dataset_id)}/task_actions/bulk_requirements/{quote(task_name, safe='')}"
    return Call("PATCH", path, json=dict(requirements))


# --------------------------------------------------------------------------------------------------
# Jobs and tasks
# --------------------------------------------------------------------------------------------------


def list_jobs(dataset_id: str, *, status: Any = None, job_index: Any = None, keys: Any = None) -> Call:
    params: dict[str, Any] = {}
    if status is not None:
        params["status"] = _joined(status, "status", JOB_STATUSES)
    if job_index is not None:
        params["job_index"] = _positive_int(job_index, "job_index", allow_zero=True)
    if keys is not None:
        params["keys"] = _joined(keys, "keys")
    return Call("GET", f"{_ds(dataset_id)}/jobs", params=params, parse=dict)


def get_job(dataset_id: str, job_id: str) -> Call:
    return Call("GET", f"{_ds(dataset_id)}/jobs/{object_id(job_id, 'job_id')}", parse=Job.from_api)


def set_job_status(dataset_id: str, job_id: str, status: str) -> Call:
    path = f"{_ds(dataset_id)}/jobs/{object_id(job_id, 'job_id')}/status"
    return Call("PUT", path, json={"status": _status(status, JOB_STATUSES, "status")})


def bulk_job_status(dataset_id: str, status: str, job_ids: Iterable[str]) -> Call:
    status = _status(status, JOB_STATUSES, "status")
    path = f"{_ds(dataset_id)}/job_actions/bulk_status/{status}"
    return Call("POST", path, json={"jobs": _id_list(job_ids, "job_ids")})


def bulk_job_action(dataset_id: str, action: str, job_ids: Iterable[str] | None = None) -> Call:
    """``suspend``, ``reset`` or ``hard_reset`` jobs (all jobs when ``job_ids`` is None)."""
    action = _status(action, STATUS_ACTIONS, "action")
    body = {"jobs": _id_list(job_ids, "job_ids")} if job_ids is not None else {}
    return Call("POST", f"{_ds(dataset_id)}/job_actions/bulk_{action}", json=body)


def job_summaries(dataset_id: str) -> Call:
    return Call("GET", f"{_ds(dataset_id)}/job_summaries/status", parse=dict)


def job_counts(dataset_id: str) -> Call:
    return Call("GET", f"{_ds(dataset_id)}/job_counts/status", parse=_counts)


def _counts(doc: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in (doc or {}).items()}


def list_tasks(
    dataset_id: str,
    *,
    status: Any = None,
    name: str | None = None,
    job_id: str | None = None,
    job_index: Any = None,
    keys: Any = None,
) -> Call:
    params: dict[str, Any] = {}
    if status is not None:
        params["status"] = _joined(status, "status", TASK_STATUSES)
    if name is not None:
        params["name"] = _joined(name, "name")
    if job_id is not None:
        params["job_id"] = object_id(job_id, "job_id")
    if job_index is not None:
        params["job_index"] = _positive_int(job_index, "job_index", allow_zero=True)
    if keys is not None:
        params["keys"] = _joined(keys, "keys")
    return Call("GET", f"{_ds(dataset_id)}/tasks", params=params, parse=dict)


def get_task(dataset_id: str, task_id: str) -> Call:
    return Call("GET", f"{_ds(dataset_id)}/tasks/{object_id(task_id, 'task_id')}", parse=Task.from_api)


def set_task_status(dataset_id: str, task_id: str, status: str) -> Call:
    path = f"{_ds(dataset_id)}/tasks/{object_id(task_id, 'task_id')}/status"
    return Call("PUT", path, json={"status": _status(status, TASK_STATUSES, "status")})


def bulk_task_status(dataset_id: str, status: str, task_ids: Iterable[str]) -> Call:
    status = _status(status, TASK_STATUSES, "status")
    path = f"{_ds(dataset_id)}/task_actions/bulk_status/{status}"
    return Call("POST", path, json={"tasks": _id_list(task_ids, "task_ids")})


def bulk_task_action(
    dataset_id: str,
    action: str,
    *,
    job_ids: Iterable[str] | None = None,
    task_ids: Iterable[str] | None = None,
) -> Call:
    """``suspend``, ``reset`` or ``hard_reset`` tasks, selected by ``job_ids`` or ``task_ids`` (or all)."""
    action = _status(action, STATUS_ACTIONS, "action")
    if job_ids is not None and task_ids is not None:
        raise _bad("task_ids", "Select tasks by job_ids or by task_ids, not both.")
    body: dict[str, Any] = {}
    if job_ids is not None:
        body["jobs"] = _id_list(job_ids, "job_ids")
    if task_ids is not None:
        body["tasks"] = _id_list(task_ids, "task_ids")
    return Call("POST", f"{_ds(dataset_id)}/task_actions/bulk_{action}", json=body)


def task_summaries(dataset_id: str) -> Call:
    return Call("GET", f"{_ds(dataset_id)}/task_summaries/status", parse=dict)


def task_counts(dataset_id: str) -> Call:
    return Call("GET", f"{_ds(dataset_id)}/task_counts/status", parse=_counts)


def task_counts_by_name(dataset_id: str) -> Call:
    def parse(doc: Any) -> dict[str, dict[str, int]]:
        return {str(name): _counts(counts) for name, counts in (doc or {}).items()}

    return Call("GET", f"{_ds(dataset_id)}/task_counts/name_status", parse=parse)


def task_stats(dataset_id: str) -> Call:
    return Call("GET", f"{_ds(dataset_id)}/task_stats", parse=dict)


def task_logs(
    dataset_id: str, task_id: str, *, num: int | None = None, group: bool = True, order: str | None = None
) -> Call:
    params: dict[str, Any] = {}
    if num is not None:
        params["num"] = _positive_int(num, "num")
    if group:
        params["group"] = "true"
    if order is not None:
        params["order"] = _status(order, ("asc", "desc"), "order")
    path = f"{_ds(dataset_id)}/tasks/{object_id(task_id, 'task_id')}/logs"
    return Call("GET", path, params=params, parse=lambda doc: list((doc or {}).get("logs", [])))


def dataset_progress(ref: Any, ctx: FlowContext) -> Flow[DatasetProgress]:
    """Dataset + job counts + task counts (three calls, concurrent in the async form)."""
    dataset_id = yield from resolve_dataset_id(ref, ctx)
    dataset, jobs, tasks = yield (
        get_dataset_by_id(dataset_id),
        job_counts(dataset_id),
        task_counts(dataset_id),
    )
    return DatasetProgress(
        dataset_id=dataset.dataset_id,
        dataset=dataset.dataset,
        status=dataset.status,
        truncated=dataset.truncated,
        jobs_submitted=dataset.jobs_submitted,
        tasks_submitted=dataset.tasks_submitted,
        job_counts=jobs,
        task_counts=tasks,
    )


# --------------------------------------------------------------------------------------------------
# /actions/*
# --------------------------------------------------------------------------------------------------


def _action_name(name: Any) -> str:
    if not isinstance(name, str) or not re.match(r"^[a-z_]{1,64}$", name):
        raise _bad("name", f"Not an IceProd action name: {name!r}.")
    return name


def post_action(name: str, body: Mapping[str, Any], *, idempotent: bool = True) -> Call:
    """``POST /actions/<name>`` -> the request id."""
    return Call(
        "POST",
        f"/actions/{_action_name(name)}",
        json=dict(body),
        parse=lambda doc: str(doc["result"]),
        idempotent=idempotent,
        service=ACTIONS,
    )


def get_action(name: str, request_id: str) -> Call:
    if not isinstance(request_id, str) or not re.match(r"^[0-9A-Za-z_-]{1,64}$", request_id):
        raise _bad("request_id", f"Not an IceProd action request id: {request_id!r}.")
    path = f"/actions/{_action_name(name)}/{request_id}"
    return Call("GET", path, parse=lambda doc: ActionRequest.from_api(name, doc), service=ACTIONS)


def wait_for_action(
    name: str,
    request_id: str,
    ctx: FlowContext,
    *,
    timeout: float = 900.0,
    on_progress: Callable[[ActionRequest], None] | None = None,
) -> Flow[ActionRequest]:
    """Poll ``/actions/<name>/<id>`` until complete; raise IceProdActionError on ``error``."""
    timeout = _finite(timeout, "timeout")
    deadline = time.monotonic() + timeout
    seen: tuple[str, float | None] | None = None
    while True:
        request: ActionRequest = yield get_action(name, request_id)
        if (request.status, request.progress) != seen:
            seen = (request.status, request.progress)
            progress = f" {request.progress:g}%" if request.progress is not None else ""
            log.info("IceProd %s request %s: %s%s", name, request_id, request.status, progress)
            if on_progress is not None:
                on_progress(request)
        if request.status == "complete":
            return request
        if request.status == "error":
            raise IceProdActionError(
                f"IceProd {name} request {request_id} failed: {request.error_message or 'no error message'}",
                iceprod_message=request.error_message or None,
                request_id=request_id,
                path=f"/actions/{name}/{request_id}",
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise IceProdActionTimeoutError(
                f"IceProd {name} request {request_id} is still {request.status} after {timeout:g} s; "
                "it may still run (look it up by its request id)",
                request_id=request_id,
                path=f"/actions/{name}/{request_id}",
            )
        yield Sleep(min(ctx.poll_interval, remaining))


def run_action(
    name: str,
    body: Mapping[str, Any],
    ctx: FlowContext,
    *,
    wait: bool = True,
    timeout: float = 900.0,
    on_progress: Callable[[ActionRequest], None] | None = None,
) -> Flow[ActionRequest]:
    """Post an action; wait for it (or return its first state when ``wait`` is False)."""
    request_id = yield post_action(name, body)
    if not wait:
        return (yield get_action(name, request_id))
    return (yield from wait_for_action(name, request_id, ctx, timeout=timeout, on_progress=on_progress))


def status_action(
    name: str,
    ref: Any,
    action: str,
    ctx: FlowContext,
    *,
    initial_status: str | None = None,
    job_ids: Iterable[str] | None = None,
    task_ids: Iterable[str] | None = None,
    wait: bool = True,
    timeout: float = 900.0,
    on_progress: Callable[[ActionRequest], None] | None = None,
) -> Flow[ActionRequest]:
    """``/actions/dataset_status|job_status|task_status`` with ``reset``, ``hard_reset`` or ``suspend``."""
    name = _status(name, ACTION_NAMES, "action name")
    body: dict[str, Any] = {"action": _status(action, STATUS_ACTIONS, "action")}
    selectors = [s for s in (initial_status, job_ids, task_ids) if s is not None]
    if name == "dataset_status" and selectors:
        raise _bad("initial_status", "dataset_status takes no initial_status, job_ids or task_ids.")
    if len(selectors) > 1:
        raise _bad("initial_status", "Give at most one of initial_status, job_ids, task_ids.")
    if task_ids is not None and name != "task_status":
        raise _bad("task_ids", "task_ids works with task_status only.")
    if initial_status is not None:
        allowed = TASK_STATUSES if name == "task_status" else JOB_STATUSES
        body["initial_status"] = _status(initial_status, allowed, "initial_status")
    if job_ids is not None:
        body["job_ids"] = _id_list(job_ids, "job_ids")
    if task_ids is not None:
        body["task_ids"] = _id_list(task_ids, "task_ids")
    dataset_id = yield from resolve_dataset_id(ref, ctx)
    body["dataset_id"] = dataset_id
    return (yield from run_action(name, body, ctx, wait=wait, timeout=timeout, on_progress=on_progress))


def materialize(
    dataset_id: str, ctx: FlowContext, *, num: int | None = None, wait: bool = True, timeout: float = 900.0
) -> Flow[ActionRequest]:
    body: dict[str, Any] = {"dataset_id": object_id(dataset_id)}
    if num is not None:
        body["num"] = _positive_int(num, "num")
    return (yield from run_action("materialization", body, ctx, wait=wait, timeout=timeout))


def check_edit_config(config: Any, description: str | None = None) -> dict[str, Any]:
    """Validate an ``edit_config`` request (config checked client-side); returns the body sans id.

    A config without ``version`` is sent as 3.2: IceProd would fill it with its 3.1 schema, which has no
    ``depends`` default, and the edit would then fail with ``'depends'`` (docs/iceprod-quirks.md, 6).
    """
    from airflow_provider_iceprod.dataset_config import validate_config

    if isinstance(config, Mapping) and "version" not in config:
        config = {**config, "version": 3.2}
    body: dict[str, Any] = {"config": json.dumps(validate_config(config, strict=True))}
    if description is not None:
        if not isinstance(description, str):
            raise _bad("description", "description must be a string.")
        body["description"] = description
    return body


def edit_config(
    ref: Any,
    body: Mapping[str, Any],
    ctx: FlowContext,
    *,
    timeout: float = 900.0,
    on_progress: Callable[[ActionRequest], None] | None = None,
) -> Flow[ActionRequest]:
    """``/actions/edit_config`` with a body from :func:`check_edit_config`.

    IceProd refuses changes to the task count, names or ``depends``.
    """
    dataset_id = yield from resolve_dataset_id(ref, ctx)
    request = {**body, "dataset_id": dataset_id}
    return (yield from run_action("edit_config", request, ctx, timeout=timeout, on_progress=on_progress))


# --------------------------------------------------------------------------------------------------
# Submit, with reconciliation by marker
# --------------------------------------------------------------------------------------------------


def marker_lookup(owner: str) -> Call:
    """The caller's datasets, only the fields the marker lookup needs."""
    return list_datasets(users=owner, keys=["dataset_id", "dataset", "description", "status"])


def _match_marker(rows: Mapping[str, Any], tag: str) -> str | None:
    matches = sorted(
        (int(row.get("dataset", 0)), str(row["dataset_id"]))
        for row in rows.values()
        if isinstance(row, dict) and tag in str(row.get("description", "")) and "dataset_id" in row
    )
    if len(matches) > 1:
        log.warning(
            "%d IceProd datasets carry %s (%s); using the oldest", len(matches), tag, [m[1] for m in matches]
        )
    return matches[0][1] if matches else None


def find_dataset_by_marker(marker: str, *, owner: str | None = None) -> Flow[Dataset | None]:
    """The dataset whose description carries ``[airflow:<marker>]`` (one lookup, plus a GET if found)."""
    tag = marker_tag(marker)
    if owner is None:
        owner = (yield NeedIdentity()).username
    dataset_id = _match_marker((yield marker_lookup(owner)), tag)
    if dataset_id is None:
        return None
    return (yield get_dataset_by_id(dataset_id))


def _wait_for_marker(tag: str, owner: str, grace: float, ctx: FlowContext) -> Flow[str | None]:
    """Look for the marker until it shows up or ``grace`` seconds have passed."""
    deadline = time.monotonic() + grace
    while True:
        try:
            found = _match_marker((yield marker_lookup(owner)), tag)
        except IceProdTransientError as exc:
            log.warning("Looking up %s failed (%s); trying again", tag, exc)
            found = None
        if found is not None:
            return found
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        yield Sleep(min(ctx.poll_interval, remaining))


def _config_stored(dataset_id: str, grace: float, ctx: FlowContext) -> Flow[bool]:
    """Wait (up to ``grace``) until the dataset's config exists."""
    deadline = time.monotonic() + grace
    while True:
        try:
            yield get_config(dataset_id)
            return True
        except IceProdNotFoundError:
            pass
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        yield Sleep(min(ctx.poll_interval, remaining))


def _ensure_config(dataset_id: str, config: Mapping[str, Any]) -> Flow[None]:
    """Low-level path: store the config if the dataset has none yet (PUT is idempotent)."""
    try:
        yield get_config(dataset_id)
    except IceProdNotFoundError:
        yield put_config(dataset_id, config)


@dataclass(frozen=True)
class SubmitRequest:
    """A checked submit: built before any request is sent."""

    config: dict[str, Any]
    description: str
    jobs_submitted: int
    group: str
    extra: dict[str, Any]
    tag: str
    low_level: bool
    materialize: bool
    timeout: float
    reconcile_grace: float

    @property
    def tasks_per_job(self) -> int:
        return len(self.config.get("tasks", []))

    def submit_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "config": json.dumps(self.config),
            "description": self.description,
            "jobs_submitted": self.jobs_submitted,
            "group": self.group,
        }
        if self.extra:
            body["extra_submit_fields"] = json.dumps(self.extra)
        return body

    def create_body(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "jobs_submitted": self.jobs_submitted,
            "tasks_submitted": self.jobs_submitted * self.tasks_per_job,
            "tasks_per_job": self.tasks_per_job,
            "group": self.group,
            **self.extra,
        }


def check_submit(
    config: Any,
    *,
    description: Any,
    jobs_submitted: Any,
    group: Any = "users",
    extra_submit_fields: Mapping[str, Any] | None = None,
    marker: str | None = None,
    low_level: bool = False,
    materialize: bool = False,
    timeout: float = 900.0,
    reconcile_grace: float = DEFAULT_RECONCILE_GRACE,
) -> SubmitRequest:
    """Validate everything about a submit (config included) before anything is sent."""
    from airflow_provider_iceprod.dataset_config import validate_config

    # filled like IceProd fills it: PUT /config (the low-level path) stores the body as sent, and a
    # config without its defaults breaks every later edit_config (docs/iceprod-quirks.md, 8)
    filled = validate_config(config, strict=True, force_version=True)
    if not isinstance(description, str):
        raise _bad("description", f"description must be a string, got {type(description).__name__}.")
    jobs = _positive_int(jobs_submitted, "jobs_submitted")
    if group not in GROUPS:
        raise _bad("group", f"group must be one of {', '.join(GROUPS)}, got {group!r}.")
    extra = _extra_fields(extra_submit_fields, low_level=low_level)
    tag = marker_tag(marker if marker is not None else new_marker())
    full_description = f"{description} {tag}" if description.strip() else tag
    return SubmitRequest(
        config=filled,
        description=full_description,
        jobs_submitted=jobs,
        group=str(group),
        extra=extra,
        tag=tag,
        low_level=bool(low_level),
        materialize=bool(materialize),
        timeout=_finite(timeout, "timeout"),
        reconcile_grace=max(_finite(reconcile_grace, "reconcile_grace"), 0.0),
    )


def submit_dataset(
    req: SubmitRequest,
    ctx: FlowContext,
    *,
    on_request: Callable[[str], None] | None = None,
    on_progress: Callable[[ActionRequest], None] | None = None,
    resume_request_id: str | None = None,
) -> Flow[SubmitResult]:
    """Submit once: reattach by marker (or a known request id), submit, wait, reconcile if ambiguous."""
    identity: Identity = yield NeedIdentity()
    owner = str(req.extra.get("username") or identity.username)

    # 1. A request this task already sent (its id was persisted through on_request)?
    if resume_request_id is not None:
        result = yield from _resume(req, ctx, resume_request_id, on_progress)
        if result is not None:
            return result

    # 2. A dataset carrying our marker already exists: reattach, never submit twice.
    existing = _match_marker((yield marker_lookup(owner)), req.tag)
    if existing is not None:
        log.info(
            "IceProd dataset %s already carries %s; reattaching instead of submitting", existing, req.tag
        )
        if req.low_level:
            yield from _ensure_config(existing, req.config)
        return (yield from _result(existing, None, ctx, reattached=True))

    # 3. Submit. An ambiguous failure is reconciled by marker, never re-sent.
    request_id: str | None = None
    try:
        if req.low_level:
            dataset_id = yield Call(
                "POST", "/datasets", json=req.create_body(), parse=_result_id, idempotent=False
            )
            yield put_config(dataset_id, req.config)
        else:
            request_id = yield post_action("submit", req.submit_body(), idempotent=False)
            if on_request is not None:
                on_request(request_id)
            done = yield from wait_for_action(
                "submit", request_id, ctx, timeout=req.timeout, on_progress=on_progress
            )
            dataset_id = _submitted_id(done)
    except IceProdAmbiguousError as exc:
        log.warning(
            "IceProd may or may not have acted on the submit (%s); looking for %s for up to %g s",
            exc,
            req.tag,
            req.reconcile_grace,
        )
        found = yield from _wait_for_marker(req.tag, owner, req.reconcile_grace, ctx)
        if found is None:
            raise IceProdAmbiguousError(
                f"{exc.message}. No dataset carrying {req.tag} appeared within {req.reconcile_grace:g} s, so "
                "probably nothing was created; the submit was not re-sent. A retry with the same marker "
                "looks again before submitting.",
                status_code=exc.status_code,
                method=exc.method,
                path=exc.path,
            ) from exc
        dataset_id = found
        if req.low_level:
            yield from _ensure_config(dataset_id, req.config)
        elif not (yield from _config_stored(dataset_id, req.reconcile_grace, ctx)):
            log.warning("IceProd dataset %s has no config yet; its submit may still be running", dataset_id)
    if req.materialize:
        yield post_action("materialization", {"dataset_id": dataset_id})
    return (yield from _result(dataset_id, request_id, ctx, reattached=False))


def _result_id(doc: Any) -> str:
    return object_id(str(doc["result"]))


def _submitted_id(done: ActionRequest) -> str:
    if not done.dataset_id:
        raise IceProdActionError(
            f"IceProd submit request {done.request_id} completed without a dataset_id",
            request_id=done.request_id,
        )
    return done.dataset_id


def _resume(
    req: SubmitRequest,
    ctx: FlowContext,
    request_id: str,
    on_progress: Callable[[ActionRequest], None] | None,
) -> Flow[SubmitResult | None]:
    try:
        request: ActionRequest = yield get_action("submit", request_id)
    except IceProdNotFoundError:
        log.info("IceProd submit request %s is gone (records expire after ~1 day)", request_id)
        return None
    if request.status == "error":
        log.warning("Earlier IceProd submit request %s failed: %s", request_id, request.error_message)
        return None
    done = yield from wait_for_action("submit", request_id, ctx, timeout=req.timeout, on_progress=on_progress)
    return (yield from _result(_submitted_id(done), request_id, ctx, reattached=True))


def _result(
    dataset_id: str, request_id: str | None, ctx: FlowContext, *, reattached: bool
) -> Flow[SubmitResult]:
    dataset: Dataset = yield get_dataset_by_id(dataset_id)
    ctx.number_cache[dataset.dataset] = dataset.dataset_id
    return SubmitResult(
        request_id=request_id,
        dataset_id=dataset.dataset_id,
        dataset=dataset.dataset,
        url=ctx.dataset_url(dataset.dataset_id),
        reattached=reattached,
    )
