"""The stand-in's in-memory database: datasets, their ACLs and configs, jobs, tasks, logs, task stats.

One re-entrant lock guards everything. Handlers, the grid simulation and the action runner all run on
the server's IOLoop thread; the Python API (``LocalIceProd.datasets()`` ...) reads from other threads,
so every access takes ``store.lock``.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_iceprod.testing.states import (
    DATASET_STATUS,
    GROUPS,
    JOB_STATUS,
    TASK_STATUS,
    ApiError,
    bulk_rule,
    found,
    new_id,
    nowstr,
)

TIMED_TASK_STATUSES = frozenset({"waiting", "queued", "processing"})  # the grid moves these on its own

# POST /datasets field types, checked with isinstance as IceProd does (so True passes as an int)
_REQUIRED_FIELDS: dict[str, type] = {
    "description": str,
    "jobs_submitted": int,
    "tasks_submitted": int,
    "tasks_per_job": int,
    "group": str,
}
_OPTIONAL_FIELDS: dict[str, type] = {
    "priority": float,
    "debug": bool,
    "jobs_immutable": bool,
    "always_active": bool,
    "status": str,
    "auth_groups_read": list,
    "username": str,
}


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's identity, the route's matched roles and the token's IceProd groups."""

    username: str
    roles: tuple[str, ...]
    groups: tuple[str, ...]

    @property
    def bypasses_acl(self) -> bool:
        return "admin" in self.roles or "system" in self.roles


@dataclass
class Store:
    lock: threading.RLock = field(default_factory=threading.RLock)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    acls: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # dataset_id -> job_id -> job
    tasks: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # dataset_id -> task_id -> task
    logs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # task_id -> log entries
    task_stats: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # task_id -> stats entries
    dataset_created: dict[str, float] = field(default_factory=dict)  # dataset_id -> monotonic time
    last_dataset_num: int = 0
    # what the grid has to look at: tasks it moves by time, and datasets where anything changed
    running: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)

    # ---------------------------------------------------------------- status changes

    def set_task_status(self, task: dict[str, Any], status: str, now: float) -> None:
        """Change a task's status, stamping ``status_changed`` and the simulation clock."""
        task["status"] = status
        task["status_changed"] = nowstr()
        task["_entered"] = now
        running = self.running.setdefault(task["dataset_id"], {})
        if status in TIMED_TASK_STATUSES:
            running[task["task_id"]] = task
        else:
            running.pop(task["task_id"], None)
        self.dirty.add(task["dataset_id"])

    def set_job_status(self, job: dict[str, Any], status: str) -> None:
        job["status"] = status
        job["status_changed"] = nowstr()
        self.dirty.add(job["dataset_id"])

    def bulk_tasks(
        self,
        dataset_id: str,
        action: str,
        now: float,
        *,
        jobs: Collection[str] | None = None,
        tasks: Collection[str] | None = None,
    ) -> None:
        """``task_actions/bulk_<action>`` (suspend, reset, hard_reset) on the tasks of ``jobs`` or on
        ``tasks`` (None: all of the dataset's)."""
        new, allowed = bulk_rule(TASK_STATUS, "idle", action)
        for task_id, task in self.dataset_tasks(dataset_id).items():
            if jobs is not None and task["job_id"] not in jobs:
                continue
            if tasks is not None and task_id not in tasks:
                continue
            if allowed is None or task["status"] in allowed:
                self.set_task_status(task, new, now)
                task["instance_id"] = ""
                if action == "hard_reset":
                    task["failures"], task["site"] = 0, ""

    def bulk_jobs(self, dataset_id: str, action: str, *, jobs: Collection[str] | None = None) -> None:
        """``job_actions/bulk_<action>`` (suspend, reset, hard_reset) on ``jobs`` (None: all of the dataset's)."""
        new, allowed = bulk_rule(JOB_STATUS, "processing", action)
        for job_id, job in self.dataset_jobs(dataset_id).items():
            if (jobs is None or job_id in jobs) and (allowed is None or job["status"] in allowed):
                self.set_job_status(job, new)

    def touch(self, dataset_id: str) -> None:
        """Something about this dataset changed: the grid's next pass looks at it."""
        self.dirty.add(dataset_id)

    # ---------------------------------------------------------------- ACL

    def check_acl(self, caller: Caller, dataset_id: str, role: str) -> None:
        """IceProd's per-dataset ACL (admin and system bypass it)."""
        if caller.bypasses_acl:
            return
        if not dataset_id:
            raise ApiError(403, "authorization failed")
        acl = self.acls.get(dataset_id)
        if acl is None:
            raise ApiError(403, "attr not found")
        if not (set(acl[f"{role}_groups"]) & set(caller.groups) or caller.username in acl[f"{role}_users"]):
            raise ApiError(403, "authorization failed")

    def can(self, caller: Caller, dataset_id: str, role: str) -> bool:
        try:
            self.check_acl(caller, dataset_id, role)
        except ApiError:
            return False
        return True

    # ---------------------------------------------------------------- datasets

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        return found(self.datasets.get(dataset_id), "Dataset")

    def config(self, dataset_id: str) -> dict[str, Any]:
        return found(self.configs.get(dataset_id), "Config")

    def create_dataset(self, data: dict[str, Any], caller: Caller, *, now: float) -> str:
        """``POST /datasets``: validate like IceProd, insert, write the ACL. Returns the dataset id."""
        data = dict(data)
        for key, typ in _REQUIRED_FIELDS.items():
            if key not in data:
                raise ApiError(400, f"missing key: {key}")
            if not isinstance(data[key], typ):
                raise ApiError(400, f'key "{key}" should be of type {typ.__name__}')
        for key, typ in _OPTIONAL_FIELDS.items():
            if key in data and not isinstance(data[key], typ):
                raise ApiError(400, f'key "{key}" should be of type {typ.__name__}')
        if set(data) - set(_REQUIRED_FIELDS) - set(_OPTIONAL_FIELDS):
            raise ApiError(400, "invalid keys found")
        read_groups = data.pop("auth_groups_read") if "auth_groups_read" in data else ["users"]
        if data["jobs_submitted"] == 0 and data["tasks_per_job"] <= 0:
            raise ApiError(400, '"tasks_per_job" must be > 0')
        if data["tasks_submitted"] != 0:
            if data["jobs_submitted"] == 0:  # IceProd divides by zero here
                raise ApiError(500, "Error in MultiDatasetHandler")
            if data["tasks_submitted"] / data["jobs_submitted"] != data["tasks_per_job"]:
                raise ApiError(400, '"tasks_per_job" does not match "tasks_submitted"/"jobs_submitted"')
        if "status" in data and data["status"] not in DATASET_STATUS:
            raise ApiError(400, "unknown status")

        self.last_dataset_num += 1
        dataset_id = new_id()
        data["dataset_id"] = dataset_id
        data["dataset"] = self.last_dataset_num
        data.setdefault("status", "processing")
        data["start_date"] = nowstr()
        if caller.roles == ("user",) or "username" not in data:
            data["username"] = caller.username
        data.setdefault("priority", 0.5)
        data.setdefault("debug", False)
        data.setdefault("jobs_immutable", False)
        data["truncated"] = False
        data.setdefault("always_active", False)
        self.datasets[dataset_id] = data
        self.dataset_created[dataset_id] = now
        self.jobs[dataset_id] = {}
        self.tasks[dataset_id] = {}
        self.touch(dataset_id)

        group = data["group"]
        all_read = {"admin", group, *read_groups}
        if any(g not in GROUPS for g in all_read):
            # IceProd inserted the dataset, then fails writing its ACL: an orphan without ACL
            raise ApiError(500, "Error in MultiDatasetHandler")
        self.acls[dataset_id] = {
            "read_groups": sorted(all_read),
            "write_groups": sorted({"admin", group}) if group != "users" else ["admin"],
            "read_users": [data["username"]],
            "write_users": [data["username"]],
        }
        return dataset_id

    def visible_datasets(self, caller: Caller) -> Iterable[dict[str, Any]]:
        for dataset_id, doc in self.datasets.items():
            if self.can(caller, dataset_id, "read"):
                yield doc

    # ---------------------------------------------------------------- jobs and tasks

    def dataset_jobs(self, dataset_id: str) -> dict[str, dict[str, Any]]:
        return self.jobs.get(dataset_id, {})

    def dataset_tasks(self, dataset_id: str) -> dict[str, dict[str, Any]]:
        return self.tasks.get(dataset_id, {})

    def find_task(self, task_id: str) -> dict[str, Any] | None:
        """A task of any dataset (``GET /tasks/{id}``)."""
        for tasks in self.tasks.values():
            if task_id in tasks:
                return tasks[task_id]
        return None

    def add_log(self, dataset_id: str, task_id: str, name: str, data: str) -> None:
        self.logs.setdefault(task_id, []).append(
            {
                "log_id": new_id(),
                "name": name,
                "data": data,
                "dataset_id": dataset_id,
                "task_id": task_id,
                "timestamp": nowstr(),
            }
        )

    # ---------------------------------------------------------------- snapshots for the Python API

    def snapshot(self, value: Any) -> Any:
        with self.lock:
            return copy.deepcopy(value)
