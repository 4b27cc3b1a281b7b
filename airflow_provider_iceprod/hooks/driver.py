"""The hook's base: connection, tokens and transports, and the two flow drivers ``_run``/``_arun``.

The driver contract is in ``docs/architecture.md``, "The hook's drivers".
"""

from __future__ import annotations

import asyncio
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from airflow.sdk import BaseHook

from airflow_provider_iceprod.api import checks, flows
from airflow_provider_iceprod.api.calls import ACTIONS, API, Call
from airflow_provider_iceprod.api.flows import Flow, FlowContext, NeedIdentity, Run, Sleep, Step
from airflow_provider_iceprod.async_warmup import warm_async_path
from airflow_provider_iceprod.exceptions import IceProdConfigError, IceProdError
from airflow_provider_iceprod.retry import RetrySettings
from airflow_provider_iceprod.settings import ConnectionSettings

if TYPE_CHECKING:
    from airflow_provider_iceprod.auth.provider import TokenProvider
    from airflow_provider_iceprod.transport import Transport

T = TypeVar("T")
#: What the drivers take: builds the flow once the connection is resolved.
Factory = Callable[[FlowContext], Flow[T]]

#: Dataset number -> id, per API URL, for the whole process (numbers never change).
_NUMBER_CACHES: dict[str, dict[int, str]] = {}
_NUMBER_CACHES_LOCK = threading.Lock()


def _number_cache(api_url: str) -> dict[int, str]:
    with _NUMBER_CACHES_LOCK:
        return _NUMBER_CACHES.setdefault(api_url, {})


def on_ref(ref: Any, build: Callable[[str], Call]) -> Factory[Any]:
    """A factory: resolve the dataset reference ``ref``, then send the call ``build(dataset_id)``."""
    return lambda ctx: flows.on_dataset(ref, ctx, build)


def one_call(call: Callable[[], Call]) -> Factory[Any]:
    """A factory of one call that needs no dataset reference."""
    return lambda ctx: flows.single(call())


def listed(values: Iterable[str] | None) -> list[str] | None:
    """An iterable of ids as a list (read once, before the flow starts), or None."""
    return list(values) if values is not None else None


class HookDriver(BaseHook):
    """Connection, tokens, transports and the two flow drivers (arguments: see ``IceProdHook``)."""

    def __init__(
        self,
        iceprod_conn_id: str = "iceprod_default",
        *,
        retry_limit: int = 5,
        retry_delay: float = 1.0,
        max_delay: float = 60.0,
        retry_after_cap: float = 120.0,
        timeout: float = 30.0,
        poll_interval: float = 5.0,
    ) -> None:
        super().__init__()
        if not isinstance(iceprod_conn_id, str) or not iceprod_conn_id:
            raise IceProdConfigError(f"iceprod_conn_id must be a connection id, got {iceprod_conn_id!r}.")
        self.iceprod_conn_id = iceprod_conn_id
        self.retry_settings = RetrySettings(
            retry_limit=retry_limit,
            retry_delay=retry_delay,
            max_delay=max_delay,
            retry_after_cap=retry_after_cap,
            timeout=timeout,
        )
        self.poll_interval = checks.finite_number(poll_interval, "poll_interval", positive=True)
        # One lock per event loop, so concurrent first calls resolve the connection once.
        self._settings_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    # ----------------------------------------------------------------------------------------------
    # Connection, tokens, transports
    # ----------------------------------------------------------------------------------------------

    @cached_property
    def settings(self) -> ConnectionSettings:
        """The parsed connection (sync lookup; the async driver uses :meth:`aget_settings`)."""
        return ConnectionSettings.from_connection(self.get_connection(self.iceprod_conn_id))

    async def aget_settings(self) -> ConnectionSettings:
        """Resolve the connection without blocking the event loop; fills the same slot as ``settings``."""
        if "settings" in self.__dict__:
            return self.__dict__["settings"]
        loop = asyncio.get_running_loop()
        lock = self._settings_locks.get(loop)
        if lock is None:
            lock = self._settings_locks[loop] = asyncio.Lock()
        async with lock:
            if "settings" not in self.__dict__:
                await warm_async_path()  # the lazy imports of the async path, in a thread
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
    def token_provider(self) -> TokenProvider:
        """Bearer tokens for this connection (shared process-wide cache; no I/O to build)."""
        from airflow_provider_iceprod.auth.provider import TokenProvider

        return TokenProvider(self.settings, retry=self.retry_settings)

    @cached_property
    def _transports(self) -> dict[str, Transport]:
        from airflow_provider_iceprod.auth.httpx_auth import IceProdAuth
        from airflow_provider_iceprod.transport import Transport

        settings = self.settings
        auth = IceProdAuth(self.token_provider)
        transport = Transport(settings.api_url, auth=auth, retry=self.retry_settings)
        actions = transport
        if settings.actions_url != settings.api_url:
            actions = Transport(settings.actions_url, auth=auth, retry=self.retry_settings)
        return {API: transport, ACTIONS: actions}

    @cached_property
    def _ctx(self) -> FlowContext:
        settings = self.settings
        return FlowContext(
            poll_interval=self.poll_interval,
            number_cache=_number_cache(settings.api_url),
            dataset_url=settings.dataset_url,
        )

    # ----------------------------------------------------------------------------------------------
    # The two drivers (contract: docs/architecture.md, "The hook's drivers")
    # ----------------------------------------------------------------------------------------------

    def _run(self, factory: Factory[T]) -> T:
        """Resolve the connection, build the flow, drive it synchronously."""
        self.settings  # noqa: B018  (the sync lookup)
        with Run(factory(self._ctx)) as run:
            for step in run:
                try:
                    run.send(self._perform(step))
                except IceProdError as exc:  # thrown back into the flow, which may handle it
                    run.throw(exc)
        return run.result

    async def _arun(self, factory: Factory[T]) -> T:
        """Resolve the connection without blocking the loop, build the flow, drive it on the loop."""
        await self.aget_settings()
        with Run(factory(self._ctx)) as run:
            for step in run:
                try:
                    run.send(await self._aperform(step))
                except IceProdError as exc:
                    run.throw(exc)
        return run.result

    def _send(self, call: Call) -> Any:
        raw = self._transports[call.service].request(
            call.method, call.path, params=call.params, json=call.json, idempotent=call.idempotent
        )
        return call.parse(raw)

    async def _asend(self, call: Call) -> Any:
        raw = await self._transports[call.service].arequest(
            call.method, call.path, params=call.params, json=call.json, idempotent=call.idempotent
        )
        return call.parse(raw)

    def _perform(self, step: Step) -> Any:
        if isinstance(step, Call):
            return self._send(step)
        if isinstance(step, tuple):
            return [self._send(call) for call in step]
        if isinstance(step, Sleep):
            time.sleep(step.seconds)
            return None
        if isinstance(step, NeedIdentity):
            return self.token_provider.identity()
        raise TypeError(f"unknown flow step {step!r}")

    async def _aperform(self, step: Step) -> Any:
        if isinstance(step, Call):
            return await self._asend(step)
        if isinstance(step, tuple):
            results = await asyncio.gather(*(self._asend(call) for call in step), return_exceptions=True)
            error = next((r for r in results if isinstance(r, BaseException)), None)
            if error is not None:
                raise error
            return results
        if isinstance(step, Sleep):
            await asyncio.sleep(step.seconds)
            return None
        if isinstance(step, NeedIdentity):
            return await self.token_provider.aidentity()
        raise TypeError(f"unknown flow step {step!r}")
