"""Dataset-scoped task routes, task stats and task logs (``iceprod/rest/handlers/tasks.py`` and friends)."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Any

from airflow_provider_iceprod.testing.handlers_base import BaseHandler, api
from airflow_provider_iceprod.testing.handlers_jobs import (
    BulkActionHandler,
    RecordHandler,
    RecordStatusHandler,
    StatusSummaryHandler,
    check_limit,
    int_arg,
    required_ids,
    selected_ids,
)
from airflow_provider_iceprod.testing.states import (
    RESOURCE_DEFAULTS,
    TASK_STATUS,
    ApiError,
    matching,
    project,
    split_arg,
    status_sorted,
    strtobool,
)
from airflow_provider_iceprod.testing.store import Caller

_REQUIREMENT_KEYS = {*RESOURCE_DEFAULTS, "os", "site"}


def _by_task_index(rows: dict[str, Any], first_index: dict[str, int]) -> dict[str, Any]:
    return {name: rows[name] for name in sorted(first_index, key=lambda n: first_index[n])}


class DatasetMultiTasksHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/tasks"

    @api(acl="read")
    def get(self, caller: Caller, dataset_id: str) -> None:
        statuses = self.status_arg(TASK_STATUS, "Unknown task status")
        names = split_arg(self.arg("name"))
        job_id = self.arg("job_id")
        job_index = self.arg("job_index")
        indexes = (int_arg(job_index, "job_index"),) if job_index else ()
        keys = self.arg("keys", "")
        tasks = matching(
            self.ctx.store.dataset_tasks(dataset_id),
            status=statuses,
            name=names,
            job_id=(job_id,) if job_id else (),
            job_index=indexes,
        )
        self.write_json({task_id: project(task, keys, "task_id") for task_id, task in tasks})


class TaskCountsStatusHandler(BaseHandler):
    """``GET /task_counts/status`` over all datasets: IceProd internals, admin and system only."""

    ROUTE = "/task_counts/status"

    @api(roles=("admin", "system"))
    def get(self, caller: Caller) -> None:
        tasks = [t for per_dataset in self.ctx.store.tasks.values() for t in per_dataset.values()]
        self.write_json(self.counts(tasks))

    def counts(self, tasks: list[dict[str, Any]]) -> dict[str, int]:
        statuses = self.status_arg(TASK_STATUS, "Unknown task status")
        gpu_arg = self.arg("gpu")
        gpu = strtobool(gpu_arg) if gpu_arg is not None else None
        counts: Counter[str] = Counter()
        for task in tasks:
            if statuses and task["status"] not in statuses:
                continue
            if gpu is not None:
                task_gpu = task["requirements"].get("gpu", 0) or 0
                if gpu != (task_gpu >= 1):
                    continue
            counts[task["status"]] += 1
        return status_sorted(TASK_STATUS, counts)


class DatasetTaskCountsStatusHandler(TaskCountsStatusHandler):
    ROUTE = "/datasets/{dataset_id}/task_counts/status"

    @api(acl="read")
    def get(self, caller: Caller, dataset_id: str) -> None:  # type: ignore[override]
        self.write_json(self.counts(list(self.ctx.store.dataset_tasks(dataset_id).values())))


class DatasetTaskCountsNameStatusHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/task_counts/name_status"

    @api(acl="read")
    def get(self, caller: Caller, dataset_id: str) -> None:
        rows: dict[str, Counter[str]] = defaultdict(Counter)
        first_index: dict[str, int] = {}
        for task in self.ctx.store.dataset_tasks(dataset_id).values():
            rows[task["name"]][task["status"]] += 1
            first_index.setdefault(task["name"], task["task_index"])
        self.write_json({k: dict(v) for k, v in _by_task_index(rows, first_index).items()})


class DatasetTaskStatsHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/task_stats"

    @api(acl="read")
    def get(self, caller: Caller, dataset_id: str) -> None:
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        first_index: dict[str, int] = {}
        for task in self.ctx.store.dataset_tasks(dataset_id).values():
            if task["status"] == "complete":
                groups[task["name"]].append(task)
                first_index.setdefault(task["name"], task["task_index"])
        out = {}
        for name, tasks in groups.items():
            hours = [t["walltime"] for t in tasks]
            total, total_err = sum(hours), sum(t["walltime_err"] for t in tasks)
            out[name] = {
                "count": len(tasks),
                "gpu": sum(t["requirements"].get("gpu", 0) or 0 for t in tasks),
                "total_hrs": total,
                "total_err_hrs": total_err,
                "avg_hrs": total / len(tasks),
                "stddev_hrs": statistics.stdev(hours) if len(hours) > 1 else None,
                "min_hrs": min(hours),
                "max_hrs": max(hours),
                "efficiency": total / (total + total_err) if total + total_err > 0 else 0.0,
            }
        self.write_json(_by_task_index(out, first_index))


class DatasetTaskBulkStatusHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/task_actions/bulk_status/{status}"

    @api(acl="write")
    def post(self, caller: Caller, dataset_id: str, status: str) -> None:
        ids = required_ids(self, "tasks")
        check_limit(len(list(ids)), "tasks")
        if status not in TASK_STATUS:
            raise ApiError(400, "Bad status")
        wanted = set(ids)
        now = self.ctx.clock()
        changed = 0
        for task_id, task in self.ctx.store.dataset_tasks(dataset_id).items():
            if task_id in wanted:
                self.ctx.store.set_task_status(task, status, now)
                task["instance_id"] = ""
                changed += 1
        if not changed:
            raise ApiError(404, "Tasks not found")
        self.write_json({})


class _TaskBulkHandler(BulkActionHandler):
    KIND = "task"

    @api(acl="write")
    def post(self, caller: Caller, dataset_id: str) -> None:
        jobs = tasks = None
        if self.request.body:
            data = self.json_body()
            if data and "jobs" in data:
                jobs = set(selected_ids(self, "jobs") or [])
            elif data and "tasks" in data:
                tasks = set(selected_ids(self, "tasks") or [])
        self.ctx.store.bulk_tasks(dataset_id, self.ACTION, self.ctx.clock(), jobs=jobs, tasks=tasks)
        self.write_json({})


def _requirement_value(key: str, value: Any) -> Any:
    default = RESOURCE_DEFAULTS.get(key)
    if key == "os":
        if not isinstance(value, list):
            raise ApiError(400, f"Bad type for {key}, should be list")
    elif isinstance(default, int | list):
        if not isinstance(value, int):
            raise ApiError(400, f"Bad type for {key}, should be int")
    elif isinstance(default, float):
        if not isinstance(value, int | float):
            raise ApiError(400, f"Bad type for {key}, should be float")
    else:
        value = str(value)
    return value


class DatasetTaskBulkRequirementsHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/task_actions/bulk_requirements/{name}"
    ROUTE_PATTERNS = {"name": r"[^/?#]+"}

    def _body(self) -> dict[str, Any]:
        data = self.json_body()
        if not data:
            raise ApiError(400, "Missing body")
        if set(data) - _REQUIREMENT_KEYS:
            raise ApiError(400, "Invalid resource types")
        return {key: _requirement_value(key, data[key]) for key in _REQUIREMENT_KEYS.intersection(data)}

    def _tasks(self, dataset_id: str, name: str) -> list[dict[str, Any]]:
        tasks = [t for t in self.ctx.store.dataset_tasks(dataset_id).values() if t["name"] == name]
        if not tasks:
            raise ApiError(404, "Tasks not found")
        return tasks

    @api(acl="write")
    def patch(self, caller: Caller, dataset_id: str, name: str) -> None:
        reqs = self._body()
        for task in self._tasks(dataset_id, name):
            task["requirements"].update(reqs)
        self.write_json({})

    @api(acl="write")
    def post(self, caller: Caller, dataset_id: str, name: str) -> None:
        reqs = self._body()
        for task in self._tasks(dataset_id, name):
            current = task["requirements"]
            for key in _REQUIREMENT_KEYS:
                if key not in reqs or (key == "os" and not reqs[key]):
                    current.pop(key, None)
                elif key in RESOURCE_DEFAULTS:  # numbers: MongoDB $max
                    old = current.get(key)
                    current[key] = reqs[key] if not isinstance(old, int | float) else max(old, reqs[key])
                else:
                    current[key] = reqs[key]
        self.write_json({})


class DatasetsMultiTaskStatsHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/tasks/{task_id}/task_stats"

    @api(acl="read")
    def get(self, caller: Caller, dataset_id: str, task_id: str) -> None:
        last = str(self.arg("last", "f")).lower() in ("true", "t", "1", "yes", "y")
        keys = self.arg("keys", "")
        if keys and last:
            keys = f"{keys}|create_date"
        rows = [s for s in self.ctx.store.task_stats.get(task_id, []) if s["dataset_id"] == dataset_id]
        if last:
            rows = sorted(rows, key=lambda r: r["create_date"])[-1:]
        self.write_json({row["task_stat_id"]: project(row, keys, "task_stat_id") for row in rows})


class DatasetTaskLogsHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/tasks/{task_id}/logs"

    @api(roles=("admin", "user"), acl="read")
    def get(self, caller: Caller, dataset_id: str, task_id: str) -> None:
        num_arg = self.arg("num")
        num = None
        if num_arg:
            try:
                num = int(num_arg)
            except Exception:
                raise ApiError(400, "bad num param. must be int") from None
        group = str(self.arg("group", "false")).lower() == "true"
        order = str(self.arg("order", "desc")).lower()
        if order not in ("asc", "desc"):
            raise ApiError(400, 'bad order param. should be "asc" or "desc".')
        keys = self.arg("keys")
        logs = [entry for entry in self.ctx.store.logs.get(task_id, []) if entry["dataset_id"] == dataset_id]
        logs.sort(key=lambda e: e["timestamp"], reverse=order == "desc")
        if group:
            latest: dict[str, dict[str, Any]] = {}
            for entry in logs:
                latest.setdefault(entry["name"], entry)
            logs = sorted(latest.values(), key=lambda e: e["timestamp"], reverse=order == "desc")
        rows = [project(entry, keys, "") for entry in logs]
        if num:
            rows = rows[:num]
        if not rows:
            raise ApiError(404, "Log not found")
        self.write_json({"logs": rows})


HANDLERS: list[type[BaseHandler]] = [
    DatasetMultiTasksHandler,
    RecordHandler.subclass("DatasetTasksHandler", "task", "/datasets/{dataset_id}/tasks/{task_id}"),
    RecordStatusHandler.subclass(
        "DatasetTasksStatusHandler", "task", "/datasets/{dataset_id}/tasks/{task_id}/status"
    ),
    StatusSummaryHandler.subclass(
        "DatasetTaskSummaryStatusHandler", "task", "/datasets/{dataset_id}/task_summaries/status"
    ),
    TaskCountsStatusHandler,
    DatasetTaskCountsStatusHandler,
    DatasetTaskCountsNameStatusHandler,
    DatasetTaskStatsHandler,
    DatasetTaskBulkStatusHandler,
    *_TaskBulkHandler.per_action(),
    DatasetTaskBulkRequirementsHandler,
    DatasetsMultiTaskStatsHandler,
    DatasetTaskLogsHandler,
]
