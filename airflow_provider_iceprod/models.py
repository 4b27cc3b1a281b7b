"""Typed results of IceProd calls. Each keeps the raw IceProd document in ``raw``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

DATASET_STATUSES = ("processing", "suspended", "errors", "complete")
JOB_STATUSES = ("processing", "suspended", "errors", "complete")
TASK_STATUSES = ("idle", "waiting", "queued", "processing", "suspended", "failed", "complete")
ACTIVE_TASK_STATUSES = ("waiting", "queued", "processing")


@dataclass(frozen=True)
class Dataset:
    dataset_id: str
    dataset: int
    status: str
    description: str = ""
    jobs_submitted: int = 0
    tasks_submitted: int = 0
    tasks_per_job: int = 0
    group: str = ""
    username: str = ""
    priority: float = 0.5
    truncated: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, doc: dict[str, Any]) -> Dataset:
        return cls(
            dataset_id=str(doc["dataset_id"]),
            dataset=int(doc.get("dataset", 0)),
            status=str(doc.get("status", "")),
            description=str(doc.get("description", "")),
            jobs_submitted=int(doc.get("jobs_submitted", 0)),
            tasks_submitted=int(doc.get("tasks_submitted", 0)),
            tasks_per_job=int(doc.get("tasks_per_job", 0)),
            group=str(doc.get("group", "")),
            username=str(doc.get("username", "")),
            priority=float(doc.get("priority", 0.5)),
            truncated=bool(doc.get("truncated", False)),
            raw=dict(doc),
        )


@dataclass(frozen=True)
class ActionRequest:
    """An ``/actions/<name>`` request record. ``payload`` may hold a full config: never log it."""

    name: str
    request_id: str
    status: str  # queued | processing | complete | error
    error_message: str = ""
    progress: float | None = None
    dataset_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def done(self) -> bool:
        return self.status in ("complete", "error")

    @classmethod
    def from_api(cls, name: str, doc: dict[str, Any]) -> ActionRequest:
        payload = doc.get("payload") or {}
        progress = payload.get("progress")
        dataset_id = payload.get("dataset_id") or None
        status = str(doc.get("status", ""))
        if name == "submit" and status != "complete":
            dataset_id = None  # only trustworthy once the submit is complete
        return cls(
            name=name,
            request_id=str(doc.get("id", "")),
            status=status,
            error_message=str(doc.get("error_message") or ""),
            progress=float(progress) if progress is not None else None,
            dataset_id=dataset_id,
            raw=dict(doc),
        )


@dataclass(frozen=True)
class SubmitResult:
    request_id: str | None
    dataset_id: str
    dataset: int
    url: str
    reattached: bool = False


@dataclass(frozen=True)
class Identity:
    username: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatasetProgress:
    """One poll's view of a dataset: status plus job and task counts."""

    dataset_id: str
    dataset: int
    status: str
    truncated: bool
    jobs_submitted: int
    tasks_submitted: int
    job_counts: dict[str, int] = field(default_factory=dict)
    task_counts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_row(
        cls, row: Mapping[str, Any], job_counts: Mapping[str, int], task_counts: Mapping[str, int]
    ) -> DatasetProgress:
        """From a dataset document (``GET /datasets/{id}``, a row of the dataset list, or an event's
        ``progress``) and the job and task counts by status."""
        return cls(
            dataset_id=str(row["dataset_id"]),
            dataset=int(row.get("dataset") or 0),
            status=str(row.get("status") or ""),
            truncated=bool(row.get("truncated", False)),
            jobs_submitted=int(row.get("jobs_submitted") or 0),
            tasks_submitted=int(row.get("tasks_submitted") or 0),
            job_counts=dict(job_counts),
            task_counts=dict(task_counts),
        )

    @property
    def jobs_complete(self) -> int:
        return self.job_counts.get("complete", 0)

    @property
    def tasks_complete(self) -> int:
        return self.task_counts.get("complete", 0)

    @property
    def tasks_active(self) -> int:
        return sum(self.task_counts.get(s, 0) for s in ("waiting", "queued", "processing"))

    @property
    def tasks_failed(self) -> int:
        return self.task_counts.get("failed", 0)

    @property
    def jobs_total(self) -> int:
        """Jobs the dataset will have: ``jobs_submitted``, or those that exist for a truncated one."""
        existing = sum(self.job_counts.values())
        return existing if self.truncated else max(self.jobs_submitted, existing)

    @property
    def percent_complete(self) -> float:
        """Complete jobs as a share of :attr:`jobs_total` (the same jobs as the progress line)."""
        total = self.jobs_total
        return 100.0 * self.jobs_complete / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Every field, plain JSON values (the counts copied)."""
        return asdict(self)


@dataclass(frozen=True)
class Job:
    """A job of a dataset (``GET /datasets/{id}/jobs/{job_id}``)."""

    job_id: str
    dataset_id: str
    job_index: int
    status: str
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, doc: dict[str, Any]) -> Job:
        return cls(
            job_id=str(doc["job_id"]),
            dataset_id=str(doc.get("dataset_id", "")),
            job_index=int(doc.get("job_index", 0)),
            status=str(doc.get("status", "")),
            raw=dict(doc),
        )


@dataclass(frozen=True)
class Task:
    """A task of a dataset (``GET /datasets/{id}/tasks/{task_id}``)."""

    task_id: str
    dataset_id: str
    job_id: str
    job_index: int
    task_index: int
    name: str
    status: str
    failures: int = 0
    requirements: dict[str, Any] = field(default_factory=dict, compare=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, doc: dict[str, Any]) -> Task:
        return cls(
            task_id=str(doc["task_id"]),
            dataset_id=str(doc.get("dataset_id", "")),
            job_id=str(doc.get("job_id", "")),
            job_index=int(doc.get("job_index", 0)),
            task_index=int(doc.get("task_index", 0)),
            name=str(doc.get("name", "")),
            status=str(doc.get("status", "")),
            failures=int(doc.get("failures", 0) or 0),
            requirements=dict(doc.get("requirements") or {}),
            raw=dict(doc),
        )
