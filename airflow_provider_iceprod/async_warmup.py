"""Load what the async path imports lazily, in a worker thread, once per process.

The first async call of a hook imports the auth and transport code, httpx's async network
backend (anyio) and Airflow's async connection lookup. On the event loop that is one step of
about 100 ms, and in a triggerer starting a thousand waits, every other trigger waits for it
(``benchmarks/trigger_scale.py``). :func:`warm_async_path` does those imports in a thread
first; every async entry point (``IceProdHook.aget_settings``, the dataset trigger) awaits it.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from weakref import WeakKeyDictionary

log = logging.getLogger(__name__)

#: What the first async call would otherwise import on the event loop.
MODULES = (
    "airflow_provider_iceprod.hooks.iceprod",
    "airflow_provider_iceprod.triggers.poller",
    "airflow_provider_iceprod.transport",
    "airflow_provider_iceprod.auth.provider",
    "airflow_provider_iceprod.auth.httpx_auth",
    "airflow_provider_iceprod.auth.state_stores",
    "anyio._backends._asyncio",  # httpx's async network layer, loaded by the first request
    "airflow.providers.common.compat.connection",  # the async connection lookup
    # what that lookup imports on first use (outside a task or triggerer: supervisor, cache)
    "airflow.sdk.execution_time.supervisor",
    "airflow.sdk.execution_time.cache",
    "asgiref.sync",
)

_done = False
_pending: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = WeakKeyDictionary()


def _import_all() -> None:
    global _done
    try:
        for name in MODULES:
            try:
                importlib.import_module(name)
            except Exception as exc:  # optional here: the real call raises its own error if it needs it
                log.debug("IceProd: warm-up import of %s failed: %s", name, exc)
    finally:
        _done = True


def warming() -> asyncio.Task[None] | None:
    """The running loop's warm-up job (started on first use), or ``None`` once the path is loaded."""
    if _done:
        return None
    loop = asyncio.get_running_loop()
    task = _pending.get(loop)
    if task is None:  # a thousand waits starting together share one thread job
        task = _pending[loop] = loop.create_task(asyncio.to_thread(_import_all))
    return task


async def warm_async_path() -> None:
    """Return once the async path's modules are loaded (at once after the first time)."""
    task = warming()
    if task is not None:
        await asyncio.shield(task)
