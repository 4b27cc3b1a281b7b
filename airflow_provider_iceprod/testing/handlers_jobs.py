"""Dataset-scoped job routes (``iceprod/rest/handlers/jobs.py``), and the bases job and task routes share."""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

from airflow_provider_iceprod.testing.handlers_base import BaseHandler, api
from airflow_provider_iceprod.testing.states import (
    JOB_STATUS,
    TASK_STATUS,
    ApiError,
    found,
    ids_by_status,
    matching,
    moves,
    prev_statuses,
    project,
    status_sorted,
)
from airflow_provider_iceprod.testing.store import Caller

BULK_LIMIT = 100000


def int_arg(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f'Bad argument "{name}": must be integer') from None


def selected_ids(handler: BaseHandler, field: str) -> list[str] | None:
    """The optional ``{"jobs": [...]}`` (or ``tasks``) selector of IceProd's bulk actions."""
    if not handler.request.body:
        return None
    data = handler.json_body()
    if data and field in data:
        ids = list(data[field])
        check_limit(len(ids), field)
        return ids
    return None


def required_ids(handler: BaseHandler, field: str) -> Any:
    """The ``{"jobs": [...]}`` (or ``tasks``) of a ``bulk_status`` POST, or ``400 Missing jobs in body``."""
    data = handler.json_body()
    if not data or field not in data or not data[field]:
        raise ApiError(400, f"Missing {field} in body")
    return data[field]


def check_limit(count: int, field: str) -> None:
    if count > BULK_LIMIT:
        raise ApiError(400, f"Too many {field} specified (limit: 100k)")


class KindHandler(BaseHandler):
    """Base of the routes IceProd has for jobs and for tasks alike; ``KIND`` is ``job`` or ``task``."""

    KIND: ClassVar[str]

    @classmethod
    def subclass(cls, name: str, kind: str, route: str, **attrs: str) -> type[BaseHandler]:
        """A route of this shared handler for one kind, named as IceProd names its handler class."""
        return type(name, (cls,), {"ROUTE": route, "KIND": kind, "__module__": cls.__module__, **attrs})

    @property
    def machine(self) -> dict[str, list[str]]:
        return JOB_STATUS if self.KIND == "job" else TASK_STATUS

    @property
    def id_field(self) -> str:
        return f"{self.KIND}_id"

    def records(self, dataset_id: str) -> dict[str, dict[str, Any]]:
        store = self.ctx.store
        return store.dataset_jobs(dataset_id) if self.KIND == "job" else store.dataset_tasks(dataset_id)

    def record(self, dataset_id: str, path: dict[str, str]) -> dict[str, Any]:
        """The job or task the path names, or IceProd's ``404 Job not found`` (``Task not found``)."""
        return found(self.records(dataset_id).get(path[self.id_field]), self.KIND.title())


class RecordHandler(KindHandler):
    """``GET .../jobs/{job_id}`` and ``.../tasks/{task_id}`` (only tasks take ``keys`` in IceProd)."""

    @api(acl="read")
    def get(self, caller: Caller, dataset_id: str, **path: str) -> None:
        keys = self.arg("keys", "") if self.KIND == "task" else None
        self.write_json(project(self.record(dataset_id, path), keys, self.id_field))


class RecordStatusHandler(KindHandler):
    """``PUT .../jobs/{job_id}/status`` and ``.../tasks/{task_id}/status``."""

    @api(acl="write")
    def put(self, caller: Caller, dataset_id: str, **path: str) -> None:
        data = self.json_body()
        if not data or "status" not in data:
            raise ApiError(400, "Missing status in body")
        if data["status"] not in self.machine:
            raise ApiError(400, "Bad status")
        record = self.record(dataset_id, path)
        if moves(self.machine, record["status"], data["status"]):
            if self.KIND == "job":
                self.ctx.store.set_job_status(record, data["status"])
            else:
                self.ctx.store.set_task_status(record, data["status"], self.ctx.clock())
                record["instance_id"] = ""
        self.write_json({})


class StatusSummaryHandler(KindHandler):
    """``GET .../job_summaries/status`` and ``.../task_summaries/status``: the ids per status."""

    @api(acl="read")
    def get(self, caller: Caller, dataset_id: str) -> None:
        self.write_json(ids_by_status(self.machine, self.records(dataset_id)))


class DatasetMultiJobsHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/jobs"

    @api(acl="read")
    def get(self, caller: Caller, dataset_id: str) -> None:
        statuses = self.status_arg(JOB_STATUS, "Unknown status")
        job_index = self.arg("job_index")
        indexes = (int_arg(job_index, "job_index"),) if job_index else ()
        keys = self.arg("keys", "")
        jobs = matching(self.ctx.store.dataset_jobs(dataset_id), status=statuses, job_index=indexes)
        self.write_json({job_id: project(job, keys, "job_id") for job_id, job in jobs})


class DatasetJobBulkStatusHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/job_actions/bulk_status/{status}"

    @api(acl="write")
    def post(self, caller: Caller, dataset_id: str, status: str) -> None:
        ids = required_ids(self, "jobs")
        wanted = set(ids)
        check_limit(len(ids), "jobs")
        if status not in JOB_STATUS:
            raise ApiError(400, "Bad status")
        allowed = prev_statuses(JOB_STATUS, status)
        changed = 0
        for job_id, job in self.ctx.store.dataset_jobs(dataset_id).items():
            if job_id in wanted and job["status"] in allowed:
                self.ctx.store.set_job_status(job, status)
                changed += 1
        if not changed:
            raise ApiError(404, "Jobs not found")
        self.write_json({})


class BulkActionHandler(KindHandler):
    """Base of ``job_actions|task_actions/bulk_suspend|bulk_reset|bulk_hard_reset``."""

    ACTION: ClassVar[str]  # "suspend", "reset" or "hard_reset"

    @classmethod
    def per_action(cls) -> list[type[BaseHandler]]:
        """One subclass per action, with IceProd's route and class name (``DatasetJobBulkSuspendHandler``)."""
        return [
            cls.subclass(
                f"Dataset{cls.KIND.title()}Bulk{action.title().replace('_', '')}Handler",
                cls.KIND,
                f"/datasets/{{dataset_id}}/{cls.KIND}_actions/bulk_{action}",
                ACTION=action,
            )
            for action in ("suspend", "reset", "hard_reset")
        ]


class _JobBulkHandler(BulkActionHandler):
    KIND = "job"

    @api(acl="write")
    def post(self, caller: Caller, dataset_id: str) -> None:
        ids = selected_ids(self, "jobs")
        self.ctx.store.bulk_jobs(dataset_id, self.ACTION, jobs=set(ids) if ids is not None else None)
        self.write_json({})


class DatasetJobCountsStatusHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/job_counts/status"

    @api(acl="read")
    def get(self, caller: Caller, dataset_id: str) -> None:
        counts = Counter(job["status"] for job in self.ctx.store.dataset_jobs(dataset_id).values())
        self.write_json(status_sorted(JOB_STATUS, counts))


HANDLERS: list[type[BaseHandler]] = [
    DatasetMultiJobsHandler,
    RecordHandler.subclass("DatasetJobsHandler", "job", "/datasets/{dataset_id}/jobs/{job_id}"),
    RecordStatusHandler.subclass(
        "DatasetJobsStatusHandler", "job", "/datasets/{dataset_id}/jobs/{job_id}/status"
    ),
    DatasetJobBulkStatusHandler,
    *_JobBulkHandler.per_action(),
    StatusSummaryHandler.subclass(
        "DatasetJobSummariesStatusHandler", "job", "/datasets/{dataset_id}/job_summaries/status"
    ),
    DatasetJobCountsStatusHandler,
]
