"""The hook's keyword-argument sets, each defined once for a call's sync and async form.

Each is a ``TypedDict`` used as ``**kwargs: Unpack[...]``, so type checkers and IDEs see every
name and type; omitted keys take the defaults of the call or flow the hook hands them to
(:mod:`~airflow_provider_iceprod.api.calls`, :mod:`~airflow_provider_iceprod.api.flows`,
:mod:`~airflow_provider_iceprod.api.submit_flow`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypedDict

from airflow_provider_iceprod.api.checks import SubmitArgs
from airflow_provider_iceprod.models import ActionRequest

OnProgress = Callable[[ActionRequest], None] | None


class SubmitCallbacks(TypedDict, total=False):
    """The keyword arguments of ``submit_dataset`` besides those of ``check_submit`` (see there)."""

    on_request: Callable[[str], None] | None
    on_progress: OnProgress
    resume_request_id: str | None
    sent_at: float | None
    on_send: Callable[[float], None] | None


class SubmitOptions(SubmitCallbacks, total=False):
    """The keyword arguments of ``submit``: those of
    :func:`~airflow_provider_iceprod.api.submit_flow.submit_dataset`."""

    fresh: bool


class SubmitDatasetArgs(SubmitArgs, SubmitCallbacks, total=False):
    """The keyword arguments of ``submit_dataset``."""


class JobSelection(TypedDict, total=False):
    """The keyword arguments of ``job_status_action``: which jobs (``initial_status`` or
    ``job_ids``; all when neither), ``wait`` for the request to complete (default ``True``),
    ``on_progress(request)`` while waiting."""

    initial_status: str | None
    job_ids: Iterable[str] | None
    wait: bool
    on_progress: OnProgress


class JobQuery(TypedDict, total=False):
    """Filters of ``list_jobs``: ``status`` (a status or a list), ``job_index``, and the ``keys``
    (fields) to return; all optional."""

    status: Any
    job_index: int | None
    keys: Any


class TaskQuery(JobQuery, total=False):
    """Filters of ``list_tasks``: those of :class:`JobQuery`, the task ``name`` and ``job_id``."""

    name: str | None
    job_id: str | None


class TaskSelector(TypedDict, total=False):
    """Which tasks ``bulk_task_action`` changes: ``job_ids`` or ``task_ids`` (all when neither)."""

    job_ids: Iterable[str] | None
    task_ids: Iterable[str] | None


class AddJobsOptions(TypedDict, total=False):
    """``add_jobs`` options: ``allow_large`` (default ``False``: totals above 1,000,000 refused),
    ``target`` (the total a retried change sets) and ``on_target(total)`` (called before the PUT)."""

    allow_large: bool
    target: int | None
    on_target: Callable[[int], None] | None


class TaskSelection(JobSelection, TaskSelector, total=False):
    """The keyword arguments of ``task_status_action``: those of :class:`JobSelection`, or
    ``task_ids`` (one selector at most)."""
