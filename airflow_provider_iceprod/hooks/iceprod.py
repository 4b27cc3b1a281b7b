"""``IceProdHook``: every IceProd dataset, job and task call, in a sync and an async form.

Each public pair is one line over the drivers of :class:`~airflow_provider_iceprod.hooks.driver.HookDriver`
(``_run`` / ``_arun`` take a flow factory and resolve the connection themselves); the calls and
flows are in :mod:`airflow_provider_iceprod.api`. Contracts: ``docs/architecture.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Unpack

from airflow_provider_iceprod.api import calls, checks, flows
from airflow_provider_iceprod.api.calls import API, Call
from airflow_provider_iceprod.hooks.actions import ActionCalls, Ref
from airflow_provider_iceprod.hooks.driver import listed, on_ref, one_call
from airflow_provider_iceprod.hooks.options import AddJobsOptions, JobQuery, TaskQuery, TaskSelector
from airflow_provider_iceprod.models import (
    Dataset,
    DatasetProgress,
    Identity,
    Job,
    Task,
)

if TYPE_CHECKING:
    from airflow_provider_iceprod.hooks.rest_client import ConnectionRestClient

__all__ = ["IceProdHook"]


class IceProdHook(ActionCalls):
    """Talk to IceProd (REST API and ``/actions/*``) through an ``iceprod`` Airflow connection.

    Args:
        iceprod_conn_id: the Airflow connection (type ``iceprod``).
        retry_limit: re-sends of a request after a transient error (timeouts, connection errors,
            5xx, 429, 503). Other 4xx answers are never retried.
        retry_delay: base of the exponential backoff (with jitter), in seconds.
        max_delay: longest backoff wait, in seconds.
        retry_after_cap: longest ``Retry-After`` wait honoured, in seconds.
        timeout: seconds to wait for each answer.
        poll_interval: seconds between polls of ``/actions/*`` requests (and marker look-ups).

    Every ``ref`` argument is a dataset's 32-hex ``dataset_id`` or its number (``int`` or a string of
    digits). Every call has an async twin named with an ``a`` prefix (``get_dataset`` /
    ``aget_dataset``) that never blocks the event loop.
    """

    conn_name_attr = "iceprod_conn_id"
    default_conn_name = "iceprod_default"
    conn_type = "iceprod"
    hook_name = "IceProd"

    # ----------------------------------------------------------------------------------------------
    # Identity and connection test
    # ----------------------------------------------------------------------------------------------

    def whoami(self) -> Identity:
        """Who the connection's token belongs to (from the token's claims)."""
        return self._run(flows.identity)

    async def awhoami(self) -> Identity:
        return await self._arun(flows.identity)

    def test_connection(self) -> tuple[bool, str]:
        """One authenticated request: ``(True, "Authenticated as <user> (<groups>)")`` or ``(False, why)``.

        Answers within 10 s (one attempt per request, short timeout); see
        :mod:`airflow_provider_iceprod.connection_test`.
        """
        from airflow_provider_iceprod.connection_test import run_connection_test

        return run_connection_test(self)

    async def atest_connection(self) -> tuple[bool, str]:
        """:meth:`test_connection` off the event loop (same requests, same 10 s bound)."""
        import asyncio

        from airflow_provider_iceprod.connection_test import run_connection_test

        return await asyncio.to_thread(run_connection_test, self)

    # ----------------------------------------------------------------------------------------------
    # IceProd's own client, and any route (logic: hooks/rest_client.py and the transport)
    # ----------------------------------------------------------------------------------------------

    def get_conn(self) -> ConnectionRestClient:
        """rest-tools' ``RestClient`` for the connection's API URL, on this hook's token machinery."""
        from airflow_provider_iceprod.hooks.rest_client import ConnectionRestClient

        return ConnectionRestClient(self.settings.api_url, self.token_provider, self.retry_settings)

    async def aget_conn(self) -> ConnectionRestClient:
        """:meth:`get_conn` for async code (resolves the connection without blocking the loop)."""
        await self.aget_settings()
        return self.get_conn()

    def run(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None
    ) -> Any:
        """Call any IceProd route through the provider's transport (retries, error mapping, the 403
        refresh, no blind re-send of a non-idempotent request); ``path`` is relative to the API URL.
        """
        return self._transports[API].request(method, path, params=params, json=json)

    async def arun(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None
    ) -> Any:
        await self.aget_settings()
        return await self._transports[API].arequest(method, path, params=params, json=json)

    def dataset_url(self, dataset_id: str) -> str:
        """The dataset's page on the IceProd website (sync only: no I/O once the connection is read)."""
        return self.settings.dataset_url(checks.object_id(dataset_id))

    # ----------------------------------------------------------------------------------------------
    # Datasets: reading
    # ----------------------------------------------------------------------------------------------

    def get_dataset(self, ref: Ref) -> Dataset:
        """The dataset document (``GET /datasets/{id}``); one request for an id."""
        return self._run(lambda ctx: flows.get_dataset(ref, ctx))

    async def aget_dataset(self, ref: Ref) -> Dataset:
        return await self._arun(lambda ctx: flows.get_dataset(ref, ctx))

    def resolve_dataset_id(self, ref: Ref) -> str:
        """The 32-hex id for a dataset id or number (numbers are looked up once per process)."""
        return self._run(lambda ctx: flows.resolve_dataset_id(ref, ctx))

    async def aresolve_dataset_id(self, ref: Ref) -> str:
        return await self._arun(lambda ctx: flows.resolve_dataset_id(ref, ctx))

    def list_datasets(
        self, *, status: Any = None, users: Any = None, groups: Any = None, keys: Any = None
    ) -> dict[str, dict[str, Any]]:
        """``GET /datasets`` filtered (values may be lists): ``{dataset_id: document}``."""
        return self._run(
            one_call(lambda: calls.list_datasets(status=status, users=users, groups=groups, keys=keys))
        )

    async def alist_datasets(
        self, *, status: Any = None, users: Any = None, groups: Any = None, keys: Any = None
    ) -> dict[str, dict[str, Any]]:
        return await self._arun(
            one_call(lambda: calls.list_datasets(status=status, users=users, groups=groups, keys=keys))
        )

    def dataset_summaries(self) -> dict[str, list[str]]:
        """``{status: [dataset_id, ...]}`` over the datasets this token can read."""
        return self._run(one_call(calls.dataset_summaries))

    async def adataset_summaries(self) -> dict[str, list[str]]:
        return await self._arun(one_call(calls.dataset_summaries))

    def get_config(self, ref: Ref) -> dict[str, Any]:
        """The stored dataset config (``GET /config/{id}``)."""
        return self._run(on_ref(ref, calls.get_config))

    async def aget_config(self, ref: Ref) -> dict[str, Any]:
        return await self._arun(on_ref(ref, calls.get_config))

    def dataset_progress(self, ref: Ref) -> DatasetProgress:
        """Dataset status plus job and task counts (three requests; concurrent in the async form)."""
        return self._run(lambda ctx: flows.dataset_progress(ref, ctx))

    async def adataset_progress(self, ref: Ref) -> DatasetProgress:
        return await self._arun(lambda ctx: flows.dataset_progress(ref, ctx))

    def job_counts(self, ref: Ref) -> dict[str, int]:
        """``{status: count}`` of the dataset's jobs (empty until materialized)."""
        return self._run(on_ref(ref, calls.job_counts))

    async def ajob_counts(self, ref: Ref) -> dict[str, int]:
        return await self._arun(on_ref(ref, calls.job_counts))

    def task_counts(self, ref: Ref) -> dict[str, int]:
        """``{status: count}`` of the dataset's tasks."""
        return self._run(on_ref(ref, calls.task_counts))

    async def atask_counts(self, ref: Ref) -> dict[str, int]:
        return await self._arun(on_ref(ref, calls.task_counts))

    def task_counts_by_name(self, ref: Ref) -> dict[str, dict[str, int]]:
        """``{task_name: {status: count}}``."""
        return self._run(on_ref(ref, calls.task_counts_by_name))

    async def atask_counts_by_name(self, ref: Ref) -> dict[str, dict[str, int]]:
        return await self._arun(on_ref(ref, calls.task_counts_by_name))

    def task_stats(self, ref: Ref) -> dict[str, Any]:
        """Per task name statistics over complete tasks (``{}`` if none)."""
        return self._run(on_ref(ref, calls.task_stats))

    async def atask_stats(self, ref: Ref) -> dict[str, Any]:
        return await self._arun(on_ref(ref, calls.task_stats))

    def job_summaries(self, ref: Ref) -> dict[str, list[str]]:
        """``{status: [job_id, ...]}``."""
        return self._run(on_ref(ref, calls.job_summaries))

    async def ajob_summaries(self, ref: Ref) -> dict[str, list[str]]:
        return await self._arun(on_ref(ref, calls.job_summaries))

    def task_summaries(self, ref: Ref) -> dict[str, list[str]]:
        """``{status: [task_id, ...]}``."""
        return self._run(on_ref(ref, calls.task_summaries))

    async def atask_summaries(self, ref: Ref) -> dict[str, list[str]]:
        return await self._arun(on_ref(ref, calls.task_summaries))

    def list_jobs(self, ref: Ref, **query: Unpack[JobQuery]) -> dict[str, dict[str, Any]]:
        """``{job_id: job}`` filtered by status (str or list) and/or job_index (:class:`JobQuery`)."""
        return self._run(on_ref(ref, lambda d: calls.list_jobs(d, **query)))

    async def alist_jobs(self, ref: Ref, **query: Unpack[JobQuery]) -> dict[str, dict[str, Any]]:
        return await self._arun(on_ref(ref, lambda d: calls.list_jobs(d, **query)))

    def get_job(self, ref: Ref, job_id: str) -> Job:
        return self._run(on_ref(ref, lambda d: calls.get_job(d, job_id)))

    async def aget_job(self, ref: Ref, job_id: str) -> Job:
        return await self._arun(on_ref(ref, lambda d: calls.get_job(d, job_id)))

    def list_tasks(self, ref: Ref, **query: Unpack[TaskQuery]) -> dict[str, dict[str, Any]]:
        """``{task_id: task}`` filtered by status (str or list), name, job_id and/or job_index
        (:class:`TaskQuery`)."""
        return self._run(on_ref(ref, lambda d: calls.list_tasks(d, **query)))

    async def alist_tasks(self, ref: Ref, **query: Unpack[TaskQuery]) -> dict[str, dict[str, Any]]:
        return await self._arun(on_ref(ref, lambda d: calls.list_tasks(d, **query)))

    def get_task(self, ref: Ref, task_id: str) -> Task:
        return self._run(on_ref(ref, lambda d: calls.get_task(d, task_id)))

    async def aget_task(self, ref: Ref, task_id: str) -> Task:
        return await self._arun(on_ref(ref, lambda d: calls.get_task(d, task_id)))

    def task_logs(
        self, ref: Ref, task_id: str, *, num: int | None = None, group: bool = True, order: str | None = None
    ) -> list[dict[str, Any]]:
        """The task's logs (``stdout``, ``stderr``, ``stdlog``; latest per name with ``group=True``)."""
        return self._run(
            on_ref(ref, lambda d: calls.task_logs(d, task_id, num=num, group=group, order=order))
        )

    async def atask_logs(
        self, ref: Ref, task_id: str, *, num: int | None = None, group: bool = True, order: str | None = None
    ) -> list[dict[str, Any]]:
        return await self._arun(
            on_ref(ref, lambda d: calls.task_logs(d, task_id, num=num, group=group, order=order))
        )

    # ----------------------------------------------------------------------------------------------
    # Dataset settings
    # ----------------------------------------------------------------------------------------------

    def truncate_dataset(self, ref: Ref) -> None:
        """Stop materializing more jobs; the dataset completes when the existing jobs finish."""
        return self._run(on_ref(ref, calls.truncate))

    async def atruncate_dataset(self, ref: Ref) -> None:
        return await self._arun(on_ref(ref, calls.truncate))

    def set_priority(self, ref: Ref, priority: float) -> None:
        """``PUT /datasets/{id}/priority`` (sent as a float)."""
        return self._run(on_ref(ref, lambda d: calls.set_priority(d, priority)))

    async def aset_priority(self, ref: Ref, priority: float) -> None:
        return await self._arun(on_ref(ref, lambda d: calls.set_priority(d, priority)))

    def set_description(self, ref: Ref, description: str) -> None:
        """``PUT /datasets/{id}/description`` (replaces it; keep the ``[airflow:...]`` marker)."""
        return self._run(on_ref(ref, lambda d: calls.set_description(d, description)))

    async def aset_description(self, ref: Ref, description: str) -> None:
        return await self._arun(on_ref(ref, lambda d: calls.set_description(d, description)))

    def set_dataset_status(self, ref: Ref, status: str) -> None:
        """``PUT /datasets/{id}/status`` (only the dataset record; prefer the actions above)."""
        return self._run(on_ref(ref, lambda d: calls.set_dataset_status(d, status)))

    async def aset_dataset_status(self, ref: Ref, status: str) -> None:
        return await self._arun(on_ref(ref, lambda d: calls.set_dataset_status(d, status)))

    def add_jobs(self, ref: Ref, count: int, **options: Unpack[AddJobsOptions]) -> int:
        """Grow ``jobs_submitted`` by ``count`` (admin/user tokens); returns the new total.

        Counts (and totals) above 1,000,000 need ``allow_large=True``. To make a retried change
        idempotent, persist the total ``on_target(total)`` gets (called before the PUT) and pass
        it back as ``target``: it is then set, never added again (:class:`AddJobsOptions`).
        """
        return self._run(lambda ctx: flows.add_jobs(ref, count, ctx, **options))

    async def aadd_jobs(self, ref: Ref, count: int, **options: Unpack[AddJobsOptions]) -> int:
        return await self._arun(lambda ctx: flows.add_jobs(ref, count, ctx, **options))

    def set_task_requirements(self, ref: Ref, task_name: str, requirements: Mapping[str, Any]) -> None:
        """Set resource requirements of every task named ``task_name`` (PATCH bulk_requirements)."""
        return self._run(on_ref(ref, lambda d: calls.set_task_requirements(d, task_name, requirements)))

    async def aset_task_requirements(self, ref: Ref, task_name: str, requirements: Mapping[str, Any]) -> None:
        return await self._arun(
            on_ref(ref, lambda d: calls.set_task_requirements(d, task_name, requirements))
        )

    # ----------------------------------------------------------------------------------------------
    # Jobs and tasks: status changes
    # ----------------------------------------------------------------------------------------------

    def set_job_status(self, ref: Ref, job_id: str, status: str) -> None:
        """``PUT .../jobs/{job_id}/status`` (IceProd checks the transition)."""
        return self._run(on_ref(ref, lambda d: calls.set_job_status(d, job_id, status)))

    async def aset_job_status(self, ref: Ref, job_id: str, status: str) -> None:
        return await self._arun(on_ref(ref, lambda d: calls.set_job_status(d, job_id, status)))

    def set_task_status(self, ref: Ref, task_id: str, status: str) -> None:
        """``PUT .../tasks/{task_id}/status`` (IceProd checks the transition)."""
        return self._run(on_ref(ref, lambda d: calls.set_task_status(d, task_id, status)))

    async def aset_task_status(self, ref: Ref, task_id: str, status: str) -> None:
        return await self._arun(on_ref(ref, lambda d: calls.set_task_status(d, task_id, status)))

    def bulk_job_status(self, ref: Ref, status: str, job_ids: Iterable[str]) -> None:
        """Set many jobs' status (transitions checked; 404 if none changed)."""
        return self._run(on_ref(ref, _bulk(calls.bulk_job_status, status, job_ids)))

    async def abulk_job_status(self, ref: Ref, status: str, job_ids: Iterable[str]) -> None:
        return await self._arun(on_ref(ref, _bulk(calls.bulk_job_status, status, job_ids)))

    def bulk_task_status(self, ref: Ref, status: str, task_ids: Iterable[str]) -> None:
        """Set many tasks' status (no transition check; 404 if none changed)."""
        return self._run(on_ref(ref, _bulk(calls.bulk_task_status, status, task_ids)))

    async def abulk_task_status(self, ref: Ref, status: str, task_ids: Iterable[str]) -> None:
        return await self._arun(on_ref(ref, _bulk(calls.bulk_task_status, status, task_ids)))

    def bulk_job_action(self, ref: Ref, action: str, job_ids: Iterable[str] | None = None) -> None:
        """``job_actions/bulk_{suspend,reset,hard_reset}`` (all jobs when ``job_ids`` is None)."""
        return self._run(on_ref(ref, _bulk_jobs(action, job_ids)))

    async def abulk_job_action(self, ref: Ref, action: str, job_ids: Iterable[str] | None = None) -> None:
        return await self._arun(on_ref(ref, _bulk_jobs(action, job_ids)))

    def bulk_task_action(self, ref: Ref, action: str, **select: Unpack[TaskSelector]) -> None:
        """``task_actions/bulk_{suspend,reset,hard_reset}`` selected by job_ids or task_ids (or all)."""
        return self._run(on_ref(ref, _bulk_tasks(action, **select)))

    async def abulk_task_action(self, ref: Ref, action: str, **select: Unpack[TaskSelector]) -> None:
        return await self._arun(on_ref(ref, _bulk_tasks(action, **select)))


def _bulk_tasks(action: str, **select: Unpack[TaskSelector]) -> Callable[[str], Call]:
    jobs, tasks = listed(select.get("job_ids")), listed(select.get("task_ids"))
    return lambda d: calls.bulk_task_action(d, action, job_ids=jobs, task_ids=tasks)


def _bulk_jobs(action: str, job_ids: Iterable[str] | None) -> Callable[[str], Call]:
    ids = listed(job_ids)
    return lambda d: calls.bulk_job_action(d, action, ids)


def _bulk(
    build: Callable[[str, str, list[str]], Call], status: str, ids: Iterable[str]
) -> Callable[[str], Call]:
    read = list(ids)  # an iterator is read once, before the flow starts
    return lambda d: build(d, status, read)
