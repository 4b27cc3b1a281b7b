"""``IceProdHook``: every IceProd dataset, job and task call, in a sync and an async form.

The calls themselves are described once in :mod:`airflow_provider_iceprod.api` (sans-IO); this hook
drives them with one sync driver (tasks) and one async driver (triggers, async tasks). HTTP, retries
and error mapping live in :mod:`airflow_provider_iceprod.transport`; bearer tokens come from
:class:`airflow_provider_iceprod.auth.provider.TokenProvider`.

Nothing happens in ``__init__`` but argument checks: the connection is read on first use (or by
:meth:`IceProdHook.aget_settings` without blocking the event loop).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseHook

from airflow_provider_iceprod import api
from airflow_provider_iceprod.api import IceProdActionTimeoutError
from airflow_provider_iceprod.exceptions import IceProdConfigError, IceProdError
from airflow_provider_iceprod.models import (
    ActionRequest,
    Dataset,
    DatasetProgress,
    Identity,
    Job,
    SubmitResult,
    Task,
)
from airflow_provider_iceprod.settings import ConnectionSettings
from airflow_provider_iceprod.transport import RetrySettings

if TYPE_CHECKING:
    import asyncio

    from airflow_provider_iceprod.hooks.rest_client import ConnectionRestClient
    from airflow_provider_iceprod.transport import BearerSource, Transport

__all__ = ["IceProdActionTimeoutError", "IceProdHook"]

T = TypeVar("T")
Ref = str | int  # a 32-hex dataset id or a dataset number

#: Dataset number -> id, per API URL, for the whole process (numbers never change).
_NUMBER_CACHES: dict[str, dict[int, str]] = {}
_NUMBER_CACHES_LOCK = threading.Lock()


def _number_cache(api_url: str) -> dict[int, str]:
    with _NUMBER_CACHES_LOCK:
        return _NUMBER_CACHES.setdefault(api_url, {})


def _first_error(results: list[Any]) -> BaseException | None:
    return next((r for r in results if isinstance(r, BaseException)), None)


class IceProdHook(BaseHook):
    """Talk to IceProd (REST API and ``/actions/*``) through an ``iceprod`` Airflow connection.

    Args:
        iceprod_conn_id: the Airflow connection (type ``iceprod``).
        retry_limit: re-sends of a request after a transient error (timeouts, connection errors,
            5xx, 429, 503). Other 4xx answers are never retried.
        retry_delay: base of the exponential backoff (full jitter), in seconds.
        retry_args: plain values overriding the above, e.g. ``{"stop_after_attempt": 3, "wait_max": 10}``
            (see :class:`~airflow_provider_iceprod.transport.RetrySettings`).
        timeout: seconds to wait for each answer.
        poll_interval: seconds between polls of ``/actions/*`` requests (and marker look-ups).

    Every ``ref`` argument is a dataset's 32-hex ``dataset_id`` or its number (``int`` or a string of
    digits). Every method has an async twin named with an ``a`` prefix (``get_dataset`` /
    ``aget_dataset``) that never blocks the event loop.
    """

    conn_name_attr = "iceprod_conn_id"
    default_conn_name = "iceprod_default"
    conn_type = "iceprod"
    hook_name = "IceProd"

    def __init__(
        self,
        iceprod_conn_id: str = default_conn_name,
        *,
        retry_limit: int = 5,
        retry_delay: float = 1.0,
        retry_args: dict[str, Any] | None = None,
        timeout: float = 30.0,
        poll_interval: float = 5.0,
    ) -> None:
        super().__init__()
        if not isinstance(iceprod_conn_id, str) or not iceprod_conn_id:
            raise IceProdConfigError(f"iceprod_conn_id must be a connection id, got {iceprod_conn_id!r}.")
        self.iceprod_conn_id = iceprod_conn_id
        self.retry_settings = RetrySettings.from_hook_args(retry_limit, retry_delay, retry_args, timeout)
        if (
            isinstance(poll_interval, bool)
            or not isinstance(poll_interval, int | float)
            or poll_interval <= 0
        ):
            raise IceProdConfigError(
                f"poll_interval must be a number of seconds > 0, got {poll_interval!r}.",
                field="poll_interval",
            )
        self.poll_interval = float(poll_interval)
        # One lock per event loop, so concurrent first calls resolve the connection once.
        self._settings_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    # ----------------------------------------------------------------------------------------------
    # Connection, tokens, transports
    # ----------------------------------------------------------------------------------------------

    @cached_property
    def settings(self) -> ConnectionSettings:
        """The parsed connection (sync lookup; async code calls :meth:`aget_settings` first)."""
        return ConnectionSettings.from_connection(self.get_connection(self.iceprod_conn_id))

    async def aget_settings(self) -> ConnectionSettings:
        """Resolve the connection without blocking the event loop; fills the same slot as ``settings``."""
        if "settings" in self.__dict__:
            return self.__dict__["settings"]
        import asyncio

        loop = asyncio.get_running_loop()
        lock = self._settings_locks.get(loop)
        if lock is None:
            lock = self._settings_locks[loop] = asyncio.Lock()
        async with lock:
            if "settings" not in self.__dict__:
                conn, extra = await self._aread_connection()
                self.__dict__["settings"] = ConnectionSettings.from_connection(conn, extra)
        return self.__dict__["settings"]

    async def _aread_connection(self) -> tuple[Any, dict[str, Any]]:
        try:
            from airflow.providers.common.compat.connection import (
                get_async_connection,
                get_async_extra_dejson,
            )
        except ImportError:  # common-compat too old: Airflow's own async lookup
            conn = await BaseHook.aget_connection(self.iceprod_conn_id)
            if hasattr(conn, "aextra_dejson"):
                return conn, await conn.aextra_dejson()
            from asgiref.sync import sync_to_async

            return conn, await sync_to_async(lambda: conn.extra_dejson)()
        conn = await get_async_connection(self.iceprod_conn_id, hook=self)
        return conn, await get_async_extra_dejson(conn)

    @cached_property
    def token_provider(self) -> BearerSource:
        """Bearer tokens for this connection (shared process-wide cache; no I/O to build)."""
        from airflow_provider_iceprod.auth.provider import TokenProvider

        return TokenProvider(self.settings, retry=self.retry_settings)

    def get_conn(self) -> ConnectionRestClient:
        """IceProd's own client, ``rest_tools.client.RestClient``, for the connection's API URL, with its
        token from this hook's token machinery (see :mod:`airflow_provider_iceprod.hooks.rest_client`).
        """
        from airflow_provider_iceprod.hooks.rest_client import ConnectionRestClient

        return ConnectionRestClient(self.settings.api_url, self.token_provider, self.retry_settings)  # type: ignore[arg-type]

    async def aget_conn(self) -> ConnectionRestClient:
        """:meth:`get_conn` for async code: resolves the connection without blocking the event loop."""
        await self.aget_settings()
        return self.get_conn()

    def run(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None
    ) -> Any:
        """Call any IceProd route (also one the hook does not wrap) through the provider's transport:
        retries, error mapping, the 403 refresh, and no blind re-send of a non-idempotent request.
        ``path`` is relative to the API URL (or an absolute URL). Returns the decoded JSON answer.
        """
        return self._transports[api.API].request(method, path, params=params, json=json)

    async def arun(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None
    ) -> Any:
        """The async form of :meth:`run`."""
        await self.aget_settings()
        return await self._transports[api.API].arequest(method, path, params=params, json=json)

    @cached_property
    def _transports(self) -> dict[str, Transport]:
        from airflow_provider_iceprod.transport import Transport

        settings = self.settings
        source = self.token_provider
        transport = Transport(settings.api_url, token_source=source, retry=self.retry_settings)
        actions = transport
        if settings.actions_url != settings.api_url:
            actions = Transport(settings.actions_url, token_source=source, retry=self.retry_settings)
        return {api.API: transport, api.ACTIONS: actions}

    @cached_property
    def _ctx(self) -> api.FlowContext:
        settings = self.settings
        return api.FlowContext(
            poll_interval=self.poll_interval,
            number_cache=_number_cache(settings.api_url),
            dataset_url=settings.dataset_url,
        )

    # ----------------------------------------------------------------------------------------------
    # The two drivers
    # ----------------------------------------------------------------------------------------------

    def _send(self, call: api.Call) -> Any:
        transport = self._transports[call.service]
        raw = transport.request(
            call.method, call.path, params=call.params, json=call.json, idempotent=call.idempotent
        )
        return call.parse(raw)

    async def _asend(self, call: api.Call) -> Any:
        transport = self._transports[call.service]
        raw = await transport.arequest(
            call.method, call.path, params=call.params, json=call.json, idempotent=call.idempotent
        )
        return call.parse(raw)

    def _perform(self, step: api.Step) -> Any:
        if isinstance(step, api.Call):
            return self._send(step)
        if isinstance(step, tuple):
            return [self._send(call) for call in step]
        if isinstance(step, api.Sleep):
            time.sleep(step.seconds)
            return None
        if isinstance(step, api.NeedIdentity):
            return self.whoami()
        raise TypeError(f"unknown flow step {step!r}")

    async def _aperform(self, step: api.Step) -> Any:
        import asyncio

        if isinstance(step, api.Call):
            return await self._asend(step)
        if isinstance(step, tuple):
            results = await asyncio.gather(*(self._asend(call) for call in step), return_exceptions=True)
            error = _first_error(results)
            if error is not None:
                raise error
            return results
        if isinstance(step, api.Sleep):
            await asyncio.sleep(step.seconds)
            return None
        if isinstance(step, api.NeedIdentity):
            return await self.awhoami()
        raise TypeError(f"unknown flow step {step!r}")

    def _run(self, flow: api.Flow[T]) -> T:
        """Drive a flow synchronously: IceProd errors are thrown back into it (it may handle them)."""
        reply: Any = None
        error: IceProdError | None = None
        try:
            while True:
                step = flow.throw(error) if error is not None else flow.send(reply)
                reply, error = None, None
                try:
                    reply = self._perform(step)
                except IceProdError as exc:
                    error = exc
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        finally:
            flow.close()

    async def _arun(self, flow: api.Flow[T]) -> T:
        """Drive a flow on the event loop (same flow as :meth:`_run`)."""
        await self.aget_settings()
        reply: Any = None
        error: IceProdError | None = None
        try:
            while True:
                step = flow.throw(error) if error is not None else flow.send(reply)
                reply, error = None, None
                try:
                    reply = await self._aperform(step)
                except IceProdError as exc:
                    error = exc
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        finally:
            flow.close()

    def _on(self, ref: Ref, build: Callable[[str], api.Call]) -> api.Flow[Any]:
        """Resolve ``ref`` then send one call built from the dataset id."""
        dataset_id = yield from api.resolve_dataset_id(ref, self._ctx)
        return (yield build(dataset_id))

    # ----------------------------------------------------------------------------------------------
    # Identity and connection test
    # ----------------------------------------------------------------------------------------------

    def whoami(self) -> Identity:
        """Who the connection's token belongs to (from the token's claims)."""
        return self.token_provider.identity()  # type: ignore[attr-defined,no-any-return]

    async def awhoami(self) -> Identity:
        await self.aget_settings()
        return await self.token_provider.aidentity()  # type: ignore[attr-defined,no-any-return]

    def test_connection(self) -> tuple[bool, str]:
        """One authenticated request: ``(True, "Authenticated as <user> (<groups>)")`` or ``(False, why)``."""
        try:
            me = self.whoami()
            self._run(
                api.single(api.list_datasets(users=me.username, status="processing", keys="dataset_id"))
            )
        except Exception as exc:
            return False, str(exc) or type(exc).__name__
        return True, f"Authenticated as {me.username} ({', '.join(me.groups) or 'no groups'})"

    async def atest_connection(self) -> tuple[bool, str]:
        try:
            me = await self.awhoami()
            await self._arun(
                api.single(api.list_datasets(users=me.username, status="processing", keys="dataset_id"))
            )
        except Exception as exc:
            return False, str(exc) or type(exc).__name__
        return True, f"Authenticated as {me.username} ({', '.join(me.groups) or 'no groups'})"

    def dataset_url(self, dataset_id: str) -> str:
        """The dataset's page on the IceProd website."""
        return self.settings.dataset_url(api.object_id(dataset_id))

    async def adataset_url(self, dataset_id: str) -> str:
        return (await self.aget_settings()).dataset_url(api.object_id(dataset_id))

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection form for Airflow < 3.2 (newer Airflow reads it from the provider info)."""
        from airflow_provider_iceprod.get_provider_info import get_provider_info

        return dict(get_provider_info()["connection-types"][0]["ui-field-behaviour"])

    # ----------------------------------------------------------------------------------------------
    # Datasets: reading
    # ----------------------------------------------------------------------------------------------

    def get_dataset(self, ref: Ref) -> Dataset:
        """The dataset document (``GET /datasets/{id}``); one request for an id."""
        return self._run(api.get_dataset(ref, self._ctx))

    async def aget_dataset(self, ref: Ref) -> Dataset:
        await self.aget_settings()
        return await self._arun(api.get_dataset(ref, self._ctx))

    def resolve_dataset_id(self, ref: Ref) -> str:
        """The 32-hex id for a dataset id or number (numbers are looked up once per process)."""
        return self._run(api.resolve_dataset_id(ref, self._ctx))

    async def aresolve_dataset_id(self, ref: Ref) -> str:
        await self.aget_settings()
        return await self._arun(api.resolve_dataset_id(ref, self._ctx))

    def list_datasets(
        self, *, status: Any = None, users: Any = None, groups: Any = None, keys: Any = None
    ) -> dict[str, dict[str, Any]]:
        """``GET /datasets`` filtered (values may be lists): ``{dataset_id: document}``."""
        call = api.list_datasets(status=status, users=users, groups=groups, keys=keys)
        return self._run(api.single(call))

    async def alist_datasets(
        self, *, status: Any = None, users: Any = None, groups: Any = None, keys: Any = None
    ) -> dict[str, dict[str, Any]]:
        call = api.list_datasets(status=status, users=users, groups=groups, keys=keys)
        return await self._arun(api.single(call))

    def dataset_summaries(self) -> dict[str, list[str]]:
        """``{status: [dataset_id, ...]}`` over the datasets this token can read."""
        return self._run(api.single(api.dataset_summaries()))

    async def adataset_summaries(self) -> dict[str, list[str]]:
        return await self._arun(api.single(api.dataset_summaries()))

    def get_config(self, ref: Ref) -> dict[str, Any]:
        """The stored dataset config (``GET /config/{id}``)."""
        return self._run(self._on(ref, api.get_config))

    async def aget_config(self, ref: Ref) -> dict[str, Any]:
        await self.aget_settings()
        return await self._arun(self._on(ref, api.get_config))

    def dataset_progress(self, ref: Ref) -> DatasetProgress:
        """Dataset status plus job and task counts (three requests; concurrent in the async form)."""
        return self._run(api.dataset_progress(ref, self._ctx))

    async def adataset_progress(self, ref: Ref) -> DatasetProgress:
        await self.aget_settings()
        return await self._arun(api.dataset_progress(ref, self._ctx))

    def job_counts(self, ref: Ref) -> dict[str, int]:
        """``{status: count}`` of the dataset's jobs (empty until materialized)."""
        return self._run(self._on(ref, api.job_counts))

    async def ajob_counts(self, ref: Ref) -> dict[str, int]:
        await self.aget_settings()
        return await self._arun(self._on(ref, api.job_counts))

    def task_counts(self, ref: Ref) -> dict[str, int]:
        """``{status: count}`` of the dataset's tasks."""
        return self._run(self._on(ref, api.task_counts))

    async def atask_counts(self, ref: Ref) -> dict[str, int]:
        await self.aget_settings()
        return await self._arun(self._on(ref, api.task_counts))

    def task_counts_by_name(self, ref: Ref) -> dict[str, dict[str, int]]:
        """``{task_name: {status: count}}``."""
        return self._run(self._on(ref, api.task_counts_by_name))

    async def atask_counts_by_name(self, ref: Ref) -> dict[str, dict[str, int]]:
        await self.aget_settings()
        return await self._arun(self._on(ref, api.task_counts_by_name))

    def task_stats(self, ref: Ref) -> dict[str, Any]:
        """Per task name statistics over complete tasks (``{}`` if none)."""
        return self._run(self._on(ref, api.task_stats))

    async def atask_stats(self, ref: Ref) -> dict[str, Any]:
        await self.aget_settings()
        return await self._arun(self._on(ref, api.task_stats))

    def job_summaries(self, ref: Ref) -> dict[str, list[str]]:
        """``{status: [job_id, ...]}``."""
        return self._run(self._on(ref, api.job_summaries))

    async def ajob_summaries(self, ref: Ref) -> dict[str, list[str]]:
        await self.aget_settings()
        return await self._arun(self._on(ref, api.job_summaries))

    def task_summaries(self, ref: Ref) -> dict[str, list[str]]:
        """``{status: [task_id, ...]}``."""
        return self._run(self._on(ref, api.task_summaries))

    async def atask_summaries(self, ref: Ref) -> dict[str, list[str]]:
        await self.aget_settings()
        return await self._arun(self._on(ref, api.task_summaries))

    def list_jobs(
        self, ref: Ref, *, status: Any = None, job_index: int | None = None, keys: Any = None
    ) -> dict[str, dict[str, Any]]:
        """``{job_id: job}`` filtered by status (str or list) and/or job_index."""
        return self._run(
            self._on(ref, lambda d: api.list_jobs(d, status=status, job_index=job_index, keys=keys))
        )

    async def alist_jobs(
        self, ref: Ref, *, status: Any = None, job_index: int | None = None, keys: Any = None
    ) -> dict[str, dict[str, Any]]:
        await self.aget_settings()
        flow = self._on(ref, lambda d: api.list_jobs(d, status=status, job_index=job_index, keys=keys))
        return await self._arun(flow)

    def get_job(self, ref: Ref, job_id: str) -> Job:
        return self._run(self._on(ref, lambda d: api.get_job(d, job_id)))

    async def aget_job(self, ref: Ref, job_id: str) -> Job:
        await self.aget_settings()
        return await self._arun(self._on(ref, lambda d: api.get_job(d, job_id)))

    def list_tasks(
        self,
        ref: Ref,
        *,
        status: Any = None,
        name: str | None = None,
        job_id: str | None = None,
        job_index: int | None = None,
        keys: Any = None,
    ) -> dict[str, dict[str, Any]]:
        """``{task_id: task}`` filtered by status (str or list), name, job_id and/or job_index."""

        def build(d: str) -> api.Call:
            return api.list_tasks(d, status=status, name=name, job_id=job_id, job_index=job_index, keys=keys)

        return self._run(self._on(ref, build))

    async def alist_tasks(
        self,
        ref: Ref,
        *,
        status: Any = None,
        name: str | None = None,
        job_id: str | None = None,
        job_index: int | None = None,
        keys: Any = None,
    ) -> dict[str, dict[str, Any]]:
        await self.aget_settings()

        def build(d: str) -> api.Call:
            return api.list_tasks(d, status=status, name=name, job_id=job_id, job_index=job_index, keys=keys)

        return await self._arun(self._on(ref, build))

    def get_task(self, ref: Ref, task_id: str) -> Task:
        return self._run(self._on(ref, lambda d: api.get_task(d, task_id)))

    async def aget_task(self, ref: Ref, task_id: str) -> Task:
        await self.aget_settings()
        return await self._arun(self._on(ref, lambda d: api.get_task(d, task_id)))

    def task_logs(
        self, ref: Ref, task_id: str, *, num: int | None = None, group: bool = True, order: str | None = None
    ) -> list[dict[str, Any]]:
        """The task's logs (``stdout``, ``stderr``, ``stdlog``; latest per name with ``group=True``)."""
        return self._run(
            self._on(ref, lambda d: api.task_logs(d, task_id, num=num, group=group, order=order))
        )

    async def atask_logs(
        self, ref: Ref, task_id: str, *, num: int | None = None, group: bool = True, order: str | None = None
    ) -> list[dict[str, Any]]:
        await self.aget_settings()
        flow = self._on(ref, lambda d: api.task_logs(d, task_id, num=num, group=group, order=order))
        return await self._arun(flow)

    # ----------------------------------------------------------------------------------------------
    # Submit
    # ----------------------------------------------------------------------------------------------

    def submit_dataset(
        self,
        config: dict[str, Any],
        *,
        description: str,
        jobs_submitted: int,
        group: str = "users",
        extra_submit_fields: dict[str, Any] | None = None,
        marker: str | None = None,
        low_level: bool = False,
        materialize: bool = False,
        on_request: Callable[[str], None] | None = None,
        on_progress: Callable[[ActionRequest], None] | None = None,
        timeout: float = 900.0,
        reconcile_grace: float = api.DEFAULT_RECONCILE_GRACE,
        resume_request_id: str | None = None,
    ) -> SubmitResult:
        """Submit a dataset; never creates a second dataset for the same marker.

        The config is checked client-side first. ``[airflow:<marker>]`` is appended to the
        description (a random marker when none is given). If a dataset with that marker already
        exists it is returned (``reattached=True``). Otherwise ``POST /actions/submit`` (or, with
        ``low_level=True``, ``POST /datasets`` + ``PUT /config/{id}``); ``on_request(request_id)`` is
        called as soon as the request exists, then the request is polled until it has a dataset.
        If the server may have acted but the answer was lost, the hook looks for the marker for
        ``reconcile_grace`` seconds instead of re-sending. ``resume_request_id`` (a request id
        saved from ``on_request`` by an earlier try) is checked first.
        """
        req = api.check_submit(
            config,
            description=description,
            jobs_submitted=jobs_submitted,
            group=group,
            extra_submit_fields=extra_submit_fields,
            marker=marker,
            low_level=low_level,
            materialize=materialize,
            timeout=timeout,
            reconcile_grace=reconcile_grace,
        )
        flow = api.submit_dataset(
            req,
            self._ctx,
            on_request=on_request,
            on_progress=on_progress,
            resume_request_id=resume_request_id,
        )
        return self._run(flow)

    async def asubmit_dataset(
        self,
        config: dict[str, Any],
        *,
        description: str,
        jobs_submitted: int,
        group: str = "users",
        extra_submit_fields: dict[str, Any] | None = None,
        marker: str | None = None,
        low_level: bool = False,
        materialize: bool = False,
        on_request: Callable[[str], None] | None = None,
        on_progress: Callable[[ActionRequest], None] | None = None,
        timeout: float = 900.0,
        reconcile_grace: float = api.DEFAULT_RECONCILE_GRACE,
        resume_request_id: str | None = None,
    ) -> SubmitResult:
        import asyncio
        import functools

        check = functools.partial(
            api.check_submit,
            config,
            description=description,
            jobs_submitted=jobs_submitted,
            group=group,
            extra_submit_fields=extra_submit_fields,
            marker=marker,
            low_level=low_level,
            materialize=materialize,
            timeout=timeout,
            reconcile_grace=reconcile_grace,
        )
        req = await asyncio.to_thread(check)  # config validation (jsonschema) off the event loop
        await self.aget_settings()
        flow = api.submit_dataset(
            req,
            self._ctx,
            on_request=on_request,
            on_progress=on_progress,
            resume_request_id=resume_request_id,
        )
        return await self._arun(flow)

    def find_dataset_by_marker(self, marker: str) -> Dataset | None:
        """The caller's dataset whose description carries ``[airflow:<marker>]``, if any."""
        return self._run(api.find_dataset_by_marker(marker))

    async def afind_dataset_by_marker(self, marker: str) -> Dataset | None:
        return await self._arun(api.find_dataset_by_marker(marker))

    # ----------------------------------------------------------------------------------------------
    # /actions/*
    # ----------------------------------------------------------------------------------------------

    def get_action(self, name: str, request_id: str) -> ActionRequest:
        """One ``/actions/<name>/<request_id>`` record (404 once expired, ~1 day)."""
        return self._run(api.single(api.get_action(name, request_id)))

    async def aget_action(self, name: str, request_id: str) -> ActionRequest:
        return await self._arun(api.single(api.get_action(name, request_id)))

    def wait_for_action(
        self,
        name: str,
        request_id: str,
        *,
        timeout: float = 900.0,
        on_progress: Callable[[ActionRequest], None] | None = None,
    ) -> ActionRequest:
        """Poll until ``complete``; raises IceProdActionError on ``error`` (with IceProd's message)
        and IceProdActionTimeoutError after ``timeout`` seconds."""
        return self._run(self._wait(name, request_id, timeout, on_progress))

    async def await_action(
        self,
        name: str,
        request_id: str,
        *,
        timeout: float = 900.0,
        on_progress: Callable[[ActionRequest], None] | None = None,
    ) -> ActionRequest:
        """Async :meth:`wait_for_action` (also available as ``await_for_action``)."""
        await self.aget_settings()
        return await self._arun(self._wait(name, request_id, timeout, on_progress))

    await_for_action = await_action

    def _wait(
        self,
        name: str,
        request_id: str,
        timeout: float,
        on_progress: Callable[[ActionRequest], None] | None,
    ) -> api.Flow[ActionRequest]:
        api.get_action(name, request_id)  # validates before the flow starts
        return api.wait_for_action(name, request_id, self._ctx, timeout=timeout, on_progress=on_progress)

    def materialize(
        self, ref: Ref, *, num: int | None = None, wait: bool = True, timeout: float = 900.0
    ) -> ActionRequest:
        """Ask IceProd to create jobs and tasks now (``/actions/materialization``; deduplicated)."""
        return self._run(self._materialize(ref, num, wait, timeout))

    async def amaterialize(
        self, ref: Ref, *, num: int | None = None, wait: bool = True, timeout: float = 900.0
    ) -> ActionRequest:
        await self.aget_settings()
        return await self._arun(self._materialize(ref, num, wait, timeout))

    def _materialize(self, ref: Ref, num: int | None, wait: bool, timeout: float) -> api.Flow[ActionRequest]:
        dataset_id = yield from api.resolve_dataset_id(ref, self._ctx)
        return (yield from api.materialize(dataset_id, self._ctx, num=num, wait=wait, timeout=timeout))

    # ----------------------------------------------------------------------------------------------
    # Dataset actions
    # ----------------------------------------------------------------------------------------------

    def _status_flow(
        self, name: str, ref: Ref, action: str, on_progress: Callable[[ActionRequest], None] | None, **kw: Any
    ) -> api.Flow[ActionRequest]:
        return api.status_action(name, ref, action, self._ctx, on_progress=on_progress, **kw)

    def suspend_dataset(
        self, ref: Ref, *, on_progress: Callable[[ActionRequest], None] | None = None
    ) -> ActionRequest:
        """Suspend the dataset, its jobs and tasks (``/actions/dataset_status`` suspend)."""
        return self._run(self._status_flow("dataset_status", ref, "suspend", on_progress))

    async def asuspend_dataset(
        self, ref: Ref, *, on_progress: Callable[[ActionRequest], None] | None = None
    ) -> ActionRequest:
        await self.aget_settings()
        return await self._arun(self._status_flow("dataset_status", ref, "suspend", on_progress))

    def resume_dataset(
        self, ref: Ref, *, on_progress: Callable[[ActionRequest], None] | None = None
    ) -> ActionRequest:
        """Resume a suspended/errors dataset (``/actions/dataset_status`` reset; restarts running tasks)."""
        return self._run(self._status_flow("dataset_status", ref, "reset", on_progress))

    async def aresume_dataset(
        self, ref: Ref, *, on_progress: Callable[[ActionRequest], None] | None = None
    ) -> ActionRequest:
        await self.aget_settings()
        return await self._arun(self._status_flow("dataset_status", ref, "reset", on_progress))

    def retry_failed_tasks(
        self, ref: Ref, *, on_progress: Callable[[ActionRequest], None] | None = None
    ) -> ActionRequest:
        """Reset the dataset's failed tasks (``/actions/task_status`` reset, ``initial_status=failed``)."""
        return self._run(self._status_flow("task_status", ref, "reset", on_progress, initial_status="failed"))

    async def aretry_failed_tasks(
        self, ref: Ref, *, on_progress: Callable[[ActionRequest], None] | None = None
    ) -> ActionRequest:
        await self.aget_settings()
        flow = self._status_flow("task_status", ref, "reset", on_progress, initial_status="failed")
        return await self._arun(flow)

    def hard_reset_dataset(
        self, ref: Ref, *, on_progress: Callable[[ActionRequest], None] | None = None
    ) -> ActionRequest:
        """Re-run everything, complete tasks included (``/actions/dataset_status`` hard_reset)."""
        return self._run(self._status_flow("dataset_status", ref, "hard_reset", on_progress))

    async def ahard_reset_dataset(
        self, ref: Ref, *, on_progress: Callable[[ActionRequest], None] | None = None
    ) -> ActionRequest:
        await self.aget_settings()
        return await self._arun(self._status_flow("dataset_status", ref, "hard_reset", on_progress))

    def job_status_action(
        self,
        ref: Ref,
        action: str,
        *,
        initial_status: str | None = None,
        job_ids: Iterable[str] | None = None,
        wait: bool = True,
        on_progress: Callable[[ActionRequest], None] | None = None,
    ) -> ActionRequest:
        """``/actions/job_status``: reset, hard_reset or suspend jobs (by initial_status or job_ids)."""
        flow = self._status_flow(
            "job_status", ref, action, on_progress, initial_status=initial_status, job_ids=job_ids, wait=wait
        )
        return self._run(flow)

    async def ajob_status_action(
        self,
        ref: Ref,
        action: str,
        *,
        initial_status: str | None = None,
        job_ids: Iterable[str] | None = None,
        wait: bool = True,
        on_progress: Callable[[ActionRequest], None] | None = None,
    ) -> ActionRequest:
        await self.aget_settings()
        flow = self._status_flow(
            "job_status", ref, action, on_progress, initial_status=initial_status, job_ids=job_ids, wait=wait
        )
        return await self._arun(flow)

    def task_status_action(
        self,
        ref: Ref,
        action: str,
        *,
        initial_status: str | None = None,
        job_ids: Iterable[str] | None = None,
        task_ids: Iterable[str] | None = None,
        wait: bool = True,
        on_progress: Callable[[ActionRequest], None] | None = None,
    ) -> ActionRequest:
        """``/actions/task_status``: reset, hard_reset or suspend tasks (by one selector at most)."""
        flow = self._status_flow(
            "task_status",
            ref,
            action,
            on_progress,
            initial_status=initial_status,
            job_ids=job_ids,
            task_ids=task_ids,
            wait=wait,
        )
        return self._run(flow)

    async def atask_status_action(
        self,
        ref: Ref,
        action: str,
        *,
        initial_status: str | None = None,
        job_ids: Iterable[str] | None = None,
        task_ids: Iterable[str] | None = None,
        wait: bool = True,
        on_progress: Callable[[ActionRequest], None] | None = None,
    ) -> ActionRequest:
        await self.aget_settings()
        flow = self._status_flow(
            "task_status",
            ref,
            action,
            on_progress,
            initial_status=initial_status,
            job_ids=job_ids,
            task_ids=task_ids,
            wait=wait,
        )
        return await self._arun(flow)

    def edit_config(
        self,
        ref: Ref,
        config: dict[str, Any],
        *,
        description: str | None = None,
        on_progress: Callable[[ActionRequest], None] | None = None,
    ) -> ActionRequest:
        """``/actions/edit_config`` (task count, names and ``depends`` cannot change)."""
        body = api.check_edit_config(config, description)
        return self._run(api.edit_config(ref, body, self._ctx, on_progress=on_progress))

    async def aedit_config(
        self,
        ref: Ref,
        config: dict[str, Any],
        *,
        description: str | None = None,
        on_progress: Callable[[ActionRequest], None] | None = None,
    ) -> ActionRequest:
        import asyncio

        body = await asyncio.to_thread(api.check_edit_config, config, description)  # schema work off the loop
        await self.aget_settings()
        return await self._arun(api.edit_config(ref, body, self._ctx, on_progress=on_progress))

    # ----------------------------------------------------------------------------------------------
    # Dataset settings
    # ----------------------------------------------------------------------------------------------

    def truncate_dataset(self, ref: Ref) -> None:
        """Stop materializing more jobs; the dataset completes when the existing jobs finish."""
        self._run(self._on(ref, api.truncate))

    async def atruncate_dataset(self, ref: Ref) -> None:
        await self.aget_settings()
        await self._arun(self._on(ref, api.truncate))

    def set_priority(self, ref: Ref, priority: float) -> None:
        self._run(self._on(ref, lambda d: api.set_priority(d, priority)))

    async def aset_priority(self, ref: Ref, priority: float) -> None:
        await self.aget_settings()
        await self._arun(self._on(ref, lambda d: api.set_priority(d, priority)))

    def set_description(self, ref: Ref, description: str) -> None:
        self._run(self._on(ref, lambda d: api.set_description(d, description)))

    async def aset_description(self, ref: Ref, description: str) -> None:
        await self.aget_settings()
        await self._arun(self._on(ref, lambda d: api.set_description(d, description)))

    def set_dataset_status(self, ref: Ref, status: str) -> None:
        """``PUT /datasets/{id}/status`` (only the dataset record; prefer the actions above)."""
        self._run(self._on(ref, lambda d: api.set_dataset_status(d, status)))

    async def aset_dataset_status(self, ref: Ref, status: str) -> None:
        await self.aget_settings()
        await self._arun(self._on(ref, lambda d: api.set_dataset_status(d, status)))

    def add_jobs(self, ref: Ref, count: int) -> int:
        """Grow ``jobs_submitted`` by ``count`` (admin/user tokens); returns the new total."""
        return self._run(api.add_jobs(ref, count, self._ctx))

    async def aadd_jobs(self, ref: Ref, count: int) -> int:
        await self.aget_settings()
        return await self._arun(api.add_jobs(ref, count, self._ctx))

    def set_task_requirements(self, ref: Ref, task_name: str, requirements: Mapping[str, Any]) -> None:
        """Set resource requirements of every task named ``task_name`` (PATCH bulk_requirements)."""
        self._run(self._on(ref, lambda d: api.set_task_requirements(d, task_name, requirements)))

    async def aset_task_requirements(self, ref: Ref, task_name: str, requirements: Mapping[str, Any]) -> None:
        await self.aget_settings()
        await self._arun(self._on(ref, lambda d: api.set_task_requirements(d, task_name, requirements)))

    # ----------------------------------------------------------------------------------------------
    # Jobs and tasks: status changes
    # ----------------------------------------------------------------------------------------------

    def set_job_status(self, ref: Ref, job_id: str, status: str) -> None:
        """``PUT .../jobs/{job_id}/status`` (IceProd checks the transition)."""
        self._run(self._on(ref, lambda d: api.set_job_status(d, job_id, status)))

    async def aset_job_status(self, ref: Ref, job_id: str, status: str) -> None:
        await self.aget_settings()
        await self._arun(self._on(ref, lambda d: api.set_job_status(d, job_id, status)))

    def set_task_status(self, ref: Ref, task_id: str, status: str) -> None:
        """``PUT .../tasks/{task_id}/status`` (IceProd checks the transition)."""
        self._run(self._on(ref, lambda d: api.set_task_status(d, task_id, status)))

    async def aset_task_status(self, ref: Ref, task_id: str, status: str) -> None:
        await self.aget_settings()
        await self._arun(self._on(ref, lambda d: api.set_task_status(d, task_id, status)))

    def bulk_job_status(self, ref: Ref, status: str, job_ids: Iterable[str]) -> None:
        """Set many jobs' status (transitions checked; 404 if none changed)."""
        ids = list(job_ids)
        self._run(self._on(ref, lambda d: api.bulk_job_status(d, status, ids)))

    async def abulk_job_status(self, ref: Ref, status: str, job_ids: Iterable[str]) -> None:
        ids = list(job_ids)
        await self.aget_settings()
        await self._arun(self._on(ref, lambda d: api.bulk_job_status(d, status, ids)))

    def bulk_task_status(self, ref: Ref, status: str, task_ids: Iterable[str]) -> None:
        """Set many tasks' status (no transition check; 404 if none changed)."""
        ids = list(task_ids)
        self._run(self._on(ref, lambda d: api.bulk_task_status(d, status, ids)))

    async def abulk_task_status(self, ref: Ref, status: str, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        await self.aget_settings()
        await self._arun(self._on(ref, lambda d: api.bulk_task_status(d, status, ids)))

    def bulk_job_action(self, ref: Ref, action: str, job_ids: Iterable[str] | None = None) -> None:
        """``job_actions/bulk_{suspend,reset,hard_reset}`` (all jobs when ``job_ids`` is None)."""
        ids = list(job_ids) if job_ids is not None else None
        self._run(self._on(ref, lambda d: api.bulk_job_action(d, action, ids)))

    async def abulk_job_action(self, ref: Ref, action: str, job_ids: Iterable[str] | None = None) -> None:
        ids = list(job_ids) if job_ids is not None else None
        await self.aget_settings()
        await self._arun(self._on(ref, lambda d: api.bulk_job_action(d, action, ids)))

    def bulk_task_action(
        self,
        ref: Ref,
        action: str,
        *,
        job_ids: Iterable[str] | None = None,
        task_ids: Iterable[str] | None = None,
    ) -> None:
        """``task_actions/bulk_{suspend,reset,hard_reset}`` selected by job_ids or task_ids (or all)."""
        jobs = list(job_ids) if job_ids is not None else None
        tasks = list(task_ids) if task_ids is not None else None
        self._run(self._on(ref, lambda d: api.bulk_task_action(d, action, job_ids=jobs, task_ids=tasks)))

    async def abulk_task_action(
        self,
        ref: Ref,
        action: str,
        *,
        job_ids: Iterable[str] | None = None,
        task_ids: Iterable[str] | None = None,
    ) -> None:
        jobs = list(job_ids) if job_ids is not None else None
        tasks = list(task_ids) if task_ids is not None else None
        await self.aget_settings()
        await self._arun(
            self._on(ref, lambda d: api.bulk_task_action(d, action, job_ids=jobs, task_ids=tasks))
        )
