"""A blocking call made on a running event loop fails at once, naming the async method to use.

A sync request on the loop's own thread would freeze every coroutine of that loop; if one of them
is refreshing the token, the sync call waits for it while blocking it, up to the 120 s lock timeout.
"""

from __future__ import annotations

import asyncio
import sys
from types import FrameType

from airflow_provider_iceprod.exceptions import IceProdConfigError

_PACKAGE = __name__.partition(".")[0]


def _async_twin(frame: FrameType | None) -> str | None:
    """``Class.aname`` for the outermost public method of this package on the stack that has an
    async twin (``get_dataset`` -> ``aget_dataset``), or None."""
    found = None
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith(_PACKAGE):
        name = frame.f_code.co_name
        owner = frame.f_locals.get("self") if not name.startswith("_") else None
        if owner is not None and callable(getattr(type(owner), "a" + name, None)):
            found = f"{type(owner).__name__}.a{name}"
        frame = frame.f_back
    return found


def refuse_running_loop(what: str) -> None:
    """Raise :class:`IceProdConfigError` when called on a thread whose event loop is running."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    twin = _async_twin(sys._getframe(1))
    hint = (
        f"use `await {twin}(...)` instead"
        if twin
        else "use the async method (the same name with an `a` prefix, e.g. `await hook.aget_dataset(...)`)"
    )
    raise IceProdConfigError(
        f"{what} is a blocking call and was made on a running event loop, which it would freeze: {hint}, "
        "or run it in a worker thread (`await asyncio.to_thread(...)`)."
    )
