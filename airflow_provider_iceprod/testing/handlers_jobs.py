"""Dataset-scoped job routes (``iceprod/rest/handlers/jobs.py``)."""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

from airflow_provider_iceprod.testing.handlers_base import BaseHandler, api
from airflow_provider_iceprod.testing.states import (
    JOB_STATUS,
    ApiError,
    found,
    ids_by_status,
    matching,
    moves,
    prev_statuses,
    project,
    split_arg,
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
        if len(ids) > BULK_LIMIT:
            raise ApiError(400, f"Too many {field} specified (limit: 100k)")
        return ids
    return None


def status_from_body(handler: BaseHandler, machine: dict[str, list[str]]) -> str:
    """The new status of a job or task status PUT."""
    data = handler.json_body()
    if not data or "status" not in data:
        raise ApiError(400, "Missing status in body")
    if data["status"] not in machine:
        raise ApiError(400, "Bad status")
    return str(data["status"])


class DatasetMultiJobsHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/jobs"

    @api(acl="read")
    def get(self, caller: Caller, dataset_id: str) -> None:
        statuses = split_arg(self.arg("status"))
        if any(s not in JOB_STATUS for s in statuses):
            raise ApiError(400, "Unknown status")
        job_index = self.arg("job_index")
        indexes = (int_arg(job_index, "job_index"),) if job_index else ()
        keys = self.arg("keys", "")
        jobs = matching(self.ctx.store.dataset_jobs(dataset_id), status=statuses, job_index=indexes)
        self.write_json({job_id: project(job, keys, "job_id") for job_id, job in jobs})


class DatasetJobsHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/jobs/{job_id}"

    @api(acl="read")
    def get(self, caller: Caller, dataset_id: str, job_id: str) -> None:
        job = found(self.ctx.store.dataset_jobs(dataset_id).get(job_id), "Job")
        self.write_json(project(job, None, "job_id"))


class DatasetJobsStatusHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/jobs/{job_id}/status"

    @api(acl="write")
    def put(self, caller: Caller, dataset_id: str, job_id: str) -> None:
        status = status_from_body(self, JOB_STATUS)
        job = found(self.ctx.store.dataset_jobs(dataset_id).get(job_id), "Job")
        if moves(JOB_STATUS, job["status"], status):
            self.ctx.store.set_job_status(job, status)
        self.write_json({})


class DatasetJobBulkStatusHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/job_actions/bulk_status/{status}"

    @api(acl="write")
    def post(self, caller: Caller, dataset_id: str, status: str) -> None:
        data = self.json_body()
        if not data or "jobs" not in data or not data["jobs"]:
            raise ApiError(400, "Missing jobs in body")
        wanted = set(data["jobs"])
        if len(data["jobs"]) > BULK_LIMIT:
            raise ApiError(400, "Too many jobs specified (limit: 100k)")
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


class BulkActionHandler(BaseHandler):
    """Base of ``job_actions|task_actions/bulk_suspend|bulk_reset|bulk_hard_reset``."""

    KIND: ClassVar[str]  # "job" or "task"
    ACTION: ClassVar[str]  # "suspend", "reset" or "hard_reset"

    @classmethod
    def per_action(cls) -> list[type[BaseHandler]]:
        """One subclass per action, with IceProd's route and class name (``DatasetJobBulkSuspendHandler``)."""
        return [
            type(
                f"Dataset{cls.KIND.title()}Bulk{action.title().replace('_', '')}Handler",
                (cls,),
                {
                    "ROUTE": f"/datasets/{{dataset_id}}/{cls.KIND}_actions/bulk_{action}",
                    "ACTION": action,
                    "__module__": cls.__module__,
                },
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


class DatasetJobSummariesStatusHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/job_summaries/status"

    @api(acl="read")
    def get(self, caller: Caller, dataset_id: str) -> None:
        self.write_json(ids_by_status(JOB_STATUS, self.ctx.store.dataset_jobs(dataset_id)))


class DatasetJobCountsStatusHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/job_counts/status"

    @api(acl="read")
    def get(self, caller: Caller, dataset_id: str) -> None:
        counts = Counter(job["status"] for job in self.ctx.store.dataset_jobs(dataset_id).values())
        self.write_json(status_sorted(JOB_STATUS, counts))


HANDLERS: list[type[BaseHandler]] = [
    DatasetMultiJobsHandler,
    DatasetJobsHandler,
    DatasetJobsStatusHandler,
    DatasetJobBulkStatusHandler,
    *_JobBulkHandler.per_action(),
    DatasetJobSummariesStatusHandler,
    DatasetJobCountsStatusHandler,
]
