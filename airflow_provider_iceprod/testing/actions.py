"""IceProd's ``/actions/*`` services: request records, synchronous validation and the asynchronous runs.

A request goes queued -> processing -> complete (or error), one ``delay`` per step, driven by the
server's IOLoop. Records expire ``ttl`` seconds after creation, whatever their status.
Validation messages are IceProd's, including Python's own ``Fields.__init__()`` errors.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import KW_ONLY, asdict, dataclass, field, make_dataclass
from typing import Any

from airflow_provider_iceprod.testing.grid import (
    Grid,
    MaterializationError,
    http_error_text,
)
from airflow_provider_iceprod.testing.states import (
    DATASET_STATUS,
    JOB_STATUS,
    TASK_STATUS,
    ApiError,
    nowstr,
    prev_statuses,
)
from airflow_provider_iceprod.testing.store import Caller, Store
from airflow_provider_iceprod.testing.validation import check_config_for_edit, check_config_for_submit

ACTION_TYPES = ("submit", "materialization", "dataset_status", "job_status", "task_status", "edit_config")
STATUSES = ("queued", "processing", "error", "complete")
SYSTEM = Caller(username="iceprod-system", roles=("system",), groups=())


def _fields(*spec: tuple[str, Any] | tuple[str, Any, Any]) -> type:
    """A dataclass named ``Fields`` (so argument errors read exactly like IceProd's)."""
    return make_dataclass(
        "Fields", [(s[0], s[1]) if len(s) == 2 else (s[0], s[1], field(default=s[2])) for s in spec]
    )


SubmitFields = _fields(
    ("config", str),
    ("description", str),
    ("jobs_submitted", int),
    ("username", str),
    ("group", str, "users"),
    ("extra_submit_fields", str | None, None),
    ("dataset_id", str, ""),
)
EditConfigFields = _fields(("dataset_id", str), ("config", str), ("description", str | None, None))
# the services' rest-tools client: retries=10, backoff_factor=0.3 (urllib3: 0 s, then 0.3 * 2**n, at most 120)
SUBMIT_RETRY_DELAYS = (0.0, 0.6, 1.2, 2.4, 4.8, 9.6, 19.2, 38.4, 76.8, 120.0)
MaterializationFields = _fields(("dataset_id", str), ("set_status", str, "idle"), ("num", int, 1000))
DatasetStatusFields = _fields(("dataset_id", str), ("action", str), ("progress", int, 0))
JobStatusFields = _fields(
    ("dataset_id", str),
    ("action", str),
    ("initial_status", str | None, None),
    ("job_ids", list | None, None),
    ("progress", int, 0),
)
TaskStatusFields = _fields(
    ("dataset_id", str),
    ("action", str),
    ("initial_status", str | None, None),
    ("job_ids", list | None, None),
    ("task_ids", list | None, None),
    ("progress", int, 0),
)


class ActionFailed(Exception):
    """The run failed; ``str()`` becomes the record's ``error_message``."""


class _RetryLater(Exception):
    """The run's HTTP client retries: run again after ``delay`` seconds, the record stays processing."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.delay = delay


@dataclass
class ActionRecord:
    id: str
    type: str
    payload: dict[str, Any]
    created: float
    status: str = "queued"
    error_message: str = ""
    attempts: int = 0

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "error_message": self.error_message if self.status == "error" else "",
            "payload": dict(self.payload),
        }


@dataclass(eq=False)
class ActionQueue:
    """The services' message queue plus its worker."""

    store: Store
    grid: Grid
    _: KW_ONLY
    api_url: str
    clock: Callable[[], float]
    delay: float = 0.05
    ttl: float = 86400.0
    iceprod_bugs: bool = True
    submit_retry_scale: float = 1.0
    # set by the server: run a callable after a delay on its loop
    schedule: Callable[[float, Callable[[], None]], None] | None = field(default=None, init=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    _records: dict[str, ActionRecord] = field(default_factory=dict, init=False, repr=False)

    # ---------------------------------------------------------------- records

    def _purge(self) -> None:
        cutoff = self.clock() - self.ttl
        for rid in [rid for rid, rec in self._records.items() if rec.created <= cutoff]:
            del self._records[rid]

    def get(self, request_id: str) -> ActionRecord | None:
        with self._lock:
            self._purge()
            return self._records.get(request_id)

    def counts(self, action_type: str) -> dict[str, int]:
        with self._lock:
            self._purge()
            out = dict.fromkeys(STATUSES, 0)
            for rec in self._records.values():
                if rec.type == action_type:
                    out[rec.status] += 1
            return out

    def total(self) -> int:
        with self._lock:
            self._purge()
            return len(self._records)

    def latest_for_dataset(self, action_type: str, dataset_id: str) -> ActionRecord | None:
        with self._lock:
            self._purge()
            found = [
                r
                for r in self._records.values()
                if r.type == action_type and r.payload.get("dataset_id") == dataset_id
            ]
            return max(found, key=lambda r: r.created) if found else None

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            self._purge()
            return [dict(rec.public(), type=rec.type) for rec in self._records.values()]

    def _push(self, action_type: str, payload: dict[str, Any]) -> str:
        payload["type"] = action_type
        record = ActionRecord(id=uuid.uuid4().hex, type=action_type, payload=payload, created=self.clock())
        with self._lock:
            self._purge()
            self._records[record.id] = record
        self._later(lambda: self._start(record.id))
        return record.id

    def _later(self, fn: Callable[[], None]) -> None:
        if self.schedule is None:
            raise RuntimeError("the action queue is not attached to a running server")
        self.schedule(self.delay, fn)

    def _start(self, request_id: str) -> None:
        with self._lock:
            record = self._records.get(request_id)
            if record is None or record.status != "queued":
                return
            record.status = "processing"
        self._later(lambda: self._run(request_id))

    def _run(self, request_id: str) -> None:
        with self._lock:
            record = self._records.get(request_id)
            if record is None or record.status != "processing":
                return
        try:
            with self.store.lock:
                runner = getattr(self, f"_run_{record.type}")
                record.attempts += 1
                try:
                    runner(record.payload, record) if record.type == "submit" else runner(record.payload)
                finally:
                    if record.payload.get("dataset_id"):
                        self.store.touch(record.payload["dataset_id"])
        except _RetryLater as retry:
            self.schedule_run(request_id, retry.delay)
            return
        except (ActionFailed, MaterializationError) as exc:
            record.error_message, record.status = str(exc), "error"
        except Exception as exc:  # a bug in a run, reported like IceProd's worker does
            record.error_message, record.status = str(exc), "error"
        else:
            record.status = "complete"

    def schedule_run(self, request_id: str, delay: float) -> None:
        if self.schedule is None:
            raise RuntimeError("the action queue is not attached to a running server")
        self.schedule(delay, lambda: self._run(request_id))

    # ---------------------------------------------------------------- create (synchronous validation)

    def create(self, action_type: str, args: Any, caller: Caller) -> str:
        """Validate a new request like IceProd's ``Action.create``; returns the request id."""
        if not isinstance(args, dict):
            raise TypeError("request body must be a JSON object")
        return getattr(self, f"_create_{action_type}")(dict(args), caller)

    @staticmethod
    def _build(fields_cls: type, args: dict[str, Any], *, int_field: str = "") -> Any:
        """The action's fields, or ``400 <the error>``; ``int_field`` may also come as a numeric string."""
        try:
            data = fields_cls(**args)
            if int_field and isinstance(getattr(data, int_field), str):
                setattr(data, int_field, int(getattr(data, int_field)))
        except Exception as exc:
            raise ApiError(400, str(exc)) from None
        return data

    def _check_write(self, caller: Caller, dataset_id: str) -> None:
        if not caller.bypasses_acl:
            with self.store.lock:
                if not self.store.can(caller, dataset_id, "write"):
                    raise ApiError(403, "auth failed")

    def _create_submit(self, args: dict[str, Any], caller: Caller) -> str:
        if "username" not in args:
            args["username"] = caller.username
        elif args["username"] != caller.username and "admin" not in caller.roles:
            raise ApiError(400, "cannot submit as a different user")
        data = self._build(SubmitFields, args, int_field="jobs_submitted")
        if data.group not in caller.groups:
            raise ApiError(400, "not a member of selected group")
        data.config = check_config_for_submit(data.config)
        return self._push("submit", asdict(data))

    def _create_edit_config(self, args: dict[str, Any], caller: Caller) -> str:
        data = self._build(EditConfigFields, args)
        self._check_write(caller, data.dataset_id)
        data.config = check_config_for_edit(data.config)
        return self._push("edit_config", asdict(data))

    def _create_materialization(self, args: dict[str, Any], caller: Caller) -> str:
        data = self._build(MaterializationFields, args, int_field="num")
        with self._lock:
            for record in self._records.values():
                if (
                    record.type == "materialization"
                    and record.status in ("queued", "processing")
                    and record.payload.get("dataset_id") == data.dataset_id
                ):
                    return record.id
        return self._push("materialization", asdict(data))

    def _create_status(self, action_type: str, fields_cls: type, args: dict[str, Any], caller: Caller) -> str:
        data = self._build(fields_cls, args)
        if data.action not in ("hard_reset", "reset", "suspend"):
            raise ApiError(400, "invalid action")
        machine = JOB_STATUS if action_type == "job_status" else TASK_STATUS
        initial = getattr(data, "initial_status", None)
        job_ids = getattr(data, "job_ids", None)
        task_ids = getattr(data, "task_ids", None)
        if initial and initial not in machine:
            raise ApiError(400, "invalid initial_status")
        if initial and task_ids:
            raise ApiError(400, "cannot define both initial_status and task_ids")
        if initial and job_ids:
            raise ApiError(400, "cannot define both initial_status and job_ids")
        if task_ids and job_ids:
            raise ApiError(400, "cannot define both task_ids and job_ids")
        self._check_write(caller, data.dataset_id)
        return self._push(action_type, asdict(data))

    def _create_dataset_status(self, args: dict[str, Any], caller: Caller) -> str:
        return self._create_status("dataset_status", DatasetStatusFields, args, caller)

    def _create_job_status(self, args: dict[str, Any], caller: Caller) -> str:
        return self._create_status("job_status", JobStatusFields, args, caller)

    def _create_task_status(self, args: dict[str, Any], caller: Caller) -> str:
        return self._create_status("task_status", TaskStatusFields, args, caller)

    # ---------------------------------------------------------------- runs (under the store lock)

    def _fail_api(self, exc: ApiError, path: str) -> ActionFailed:
        return ActionFailed(http_error_text(exc.code, exc.reason, f"{self.api_url}{path}"))

    def _run_submit(self, payload: dict[str, Any], record: ActionRecord | None = None) -> None:
        config = json.loads(payload["config"])
        tasks_per_job = len(config["tasks"])
        fields: dict[str, Any] = {
            "description": payload["description"],
            "jobs_submitted": payload["jobs_submitted"],
            "tasks_submitted": payload["jobs_submitted"] * tasks_per_job,
            "tasks_per_job": tasks_per_job,
            "username": payload["username"],
            "group": payload["group"],
        }
        if payload.get("extra_submit_fields"):
            for name, value in json.loads(payload["extra_submit_fields"]).items():
                fields.setdefault(name, value)
        try:
            dataset_id = self.store.create_dataset(fields, SYSTEM, now=self.clock())
        except ApiError as exc:
            attempt = record.attempts if record is not None else 1
            if exc.code >= 500 and self.iceprod_bugs and attempt <= len(SUBMIT_RETRY_DELAYS):
                raise _RetryLater(SUBMIT_RETRY_DELAYS[attempt - 1] * self.submit_retry_scale) from None
            if exc.code >= 500 and self.iceprod_bugs:
                host = self.api_url.split("://", 1)[-1]
                hostname, _, port = host.partition(":")
                raise ActionFailed(
                    f"HTTPConnectionPool(host='{hostname}', port={port}): Max retries exceeded with url: "
                    "/datasets (Caused by ResponseError('too many 500 error responses'))"
                ) from None
            raise self._fail_api(exc, "/datasets") from None
        self.store.configs[dataset_id] = dict(config, dataset_id=dataset_id)
        payload["dataset_id"] = dataset_id

    def _run_edit_config(self, payload: dict[str, Any]) -> None:
        """IceProd's edit_config run: same tasks, names and depends; new requirements; the new config."""
        dataset_id = payload["dataset_id"]
        config = json.loads(payload["config"])
        dataset = self._dataset_for_run(dataset_id)
        prev = self.store.configs.get(dataset_id)
        if prev is None:
            raise self._fail_api(ApiError(404, "Config not found"), f"/config/{dataset_id}")
        if len(config["tasks"]) != len(prev["tasks"]):
            raise ActionFailed("cannot add/subtract tasks - create a new dataset")
        changed: list[tuple[str, dict[str, Any]]] = []
        try:
            for task, prev_task in zip(config["tasks"], prev["tasks"], strict=True):
                if task["name"] != prev_task["name"]:
                    raise ActionFailed("cannot edit task names - create a new dataset")
                if task["depends"] != prev_task["depends"]:  # KeyError on a config stored raw
                    raise ActionFailed("cannot edit task depends - create a new dataset")
                reqs = dict(task["requirements"])
                if any("$" in v for v in reqs.values() if isinstance(v, str)):
                    raise ActionFailed("cannot update requirements - cannot parse expression")
                if reqs != prev_task["requirements"]:
                    changed.append((task["name"], reqs))
        except KeyError as exc:
            raise ActionFailed(str(exc)) from None
        for name, reqs in changed:
            for task in self.store.dataset_tasks(dataset_id).values():
                if task["name"] == name:
                    task["requirements"].update(reqs)
        self.store.configs[dataset_id] = dict(config, dataset_id=dataset_id)
        if payload.get("description") and payload["description"] != dataset["description"]:
            dataset["description"] = payload["description"]

    def _run_materialization(self, payload: dict[str, Any]) -> None:
        self.grid.materialize(
            payload["dataset_id"],
            self.clock(),
            num=payload.get("num") or 10000,
            set_status=payload.get("set_status"),
        )

    def _dataset_for_run(self, dataset_id: str) -> dict[str, Any]:
        try:
            return self.store.dataset(dataset_id)
        except ApiError as exc:
            raise self._fail_api(exc, f"/datasets/{dataset_id}") from None

    def _reset_dataset_status(self, dataset: dict[str, Any], action: str) -> None:
        if action == "suspend":
            if dataset["status"] in prev_statuses(DATASET_STATUS, "suspended"):
                dataset["status"] = "suspended"
        elif dataset["status"] in prev_statuses(DATASET_STATUS, "processing"):
            dataset["status"] = "processing"
            try:
                self.store.config(dataset["dataset_id"])
            except ApiError as exc:
                raise self._fail_api(exc, f"/config/{dataset['dataset_id']}") from None

    def _apply(
        self,
        dataset_id: str,
        action: str,
        *,
        jobs: set[str] | None,
        tasks: set[str] | None,
        touch_jobs: bool = True,
        touch_tasks: bool = True,
    ) -> None:
        """The task and job ``bulk_suspend|bulk_reset|bulk_hard_reset`` calls IceProd's runs make."""
        if touch_tasks:
            self.store.bulk_tasks(dataset_id, action, self.clock(), jobs=jobs, tasks=tasks)
        if touch_jobs:
            self.store.bulk_jobs(dataset_id, action, jobs=jobs)

    def _run_dataset_status(self, payload: dict[str, Any]) -> None:
        dataset = self._dataset_for_run(payload["dataset_id"])
        self._reset_dataset_status(dataset, payload["action"])
        jobs = set(self.store.dataset_jobs(payload["dataset_id"]))
        self._apply(payload["dataset_id"], payload["action"], jobs=jobs, tasks=None)
        payload["progress"] = 100

    def _start_status_run(self, payload: dict[str, Any]) -> tuple[str, str]:
        """The dataset and action of a job/task status run; a reset also resets the dataset's status."""
        dataset_id, action = payload["dataset_id"], payload["action"]
        dataset = self._dataset_for_run(dataset_id)
        if action != "suspend":
            self._reset_dataset_status(dataset, action)
        return dataset_id, action

    def _run_job_status(self, payload: dict[str, Any]) -> None:
        dataset_id, action = self._start_status_run(payload)
        if payload.get("job_ids") is None:
            initial = payload.get("initial_status")
            jobs = {
                jid
                for jid, job in self.store.dataset_jobs(dataset_id).items()
                if not initial or job["status"] == initial
            }
        else:
            jobs = set(payload["job_ids"])
        self._apply(dataset_id, action, jobs=jobs, tasks=None)
        payload["progress"] = 100

    def _run_task_status(self, payload: dict[str, Any]) -> None:
        dataset_id, action = self._start_status_run(payload)
        all_tasks = self.store.dataset_tasks(dataset_id)
        if payload.get("job_ids") is not None:
            jobs = set(payload["job_ids"])
            self._apply(dataset_id, action, jobs=jobs, tasks=None, touch_tasks=action != "suspend")
        else:
            if payload.get("task_ids") is not None:
                tasks = set(payload["task_ids"])
                missing = [t for t in tasks if t not in all_tasks]
                if missing and action != "suspend" and len(tasks) < 100:
                    path = f"/datasets/{dataset_id}/tasks/{missing[0]}"
                    raise self._fail_api(ApiError(404, "Task not found"), path)
            else:
                initial = payload.get("initial_status")
                tasks = {tid for tid, t in all_tasks.items() if not initial or t["status"] == initial}
            jobs = {all_tasks[t]["job_id"] for t in tasks if t in all_tasks}
            if action != "suspend":
                self._apply(dataset_id, action, jobs=jobs, tasks=None, touch_tasks=False)
            self._apply(dataset_id, action, jobs=None, tasks=tasks, touch_jobs=False)
        payload["progress"] = 100


def healthz(queue: ActionQueue) -> dict[str, Any]:
    """The actions server's ``/healthz`` answer."""
    return {"now": nowstr(), "num_requests": queue.total()}
