"""The token-state overlay: where rotated refresh tokens are kept, in every context the hook runs in.

A rotated refresh token is written (JSON, see :class:`~airflow_provider_iceprod.auth.tokens.TokenState`)
before it is used, to the place the process can write:

* in a task or trigger (the Task SDK is connected): the Variable ``iceprod_token_state__<conn_id>``
  through the Task SDK (:class:`VariableTokenStateStore`; "token" in the name: encrypted and masked);
* where the process reads connections from the metadata DB (``_AIRFLOW_PROCESS_CONTEXT=server``: the
  CLI, scheduler-side code, scripts): the same Variable through the ORM
  (:class:`~airflow_provider_iceprod.auth.state_stores.DbTokenStateStore`);
* always, as a copy on this host: an owner-only file (0600, written under a lock; see
  :class:`~airflow_provider_iceprod.auth.state_stores.FileTokenStateStore`). Where there is neither
  Task SDK nor DB (a plain script) it is the only copy. It also repairs a Variable that someone saved
  from Airflow's UI (``***``).

Stores never go backwards (:meth:`TokenState.supersedes`); a value that is not a token is ignored
with a warning; a failed *read* raises :class:`IceProdTransientError` (not "no overlay").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from airflow_provider_iceprod.auth.tokens import TokenState
from airflow_provider_iceprod.exceptions import IceProdTransientError

log = logging.getLogger(__name__)

VARIABLE_PREFIX = "iceprod_token_state__"


def variable_name(conn_id: str) -> str:
    """The overlay Variable of ``conn_id`` (contains "token": encrypted and masked by Airflow)."""
    return f"{VARIABLE_PREFIX}{conn_id}"


@runtime_checkable
class TokenStateStore(Protocol):
    """Where the newest refresh token of one connection lives.

    ``load`` returns None when there is no (usable) overlay and raises :class:`IceProdTransientError`
    when the overlay could not be read. ``save`` returns False (after logging why) when ``state`` could
    not be persisted; it does not overwrite a state that supersedes ``state``.
    """

    def load(self) -> TokenState | None: ...

    def save(self, state: TokenState) -> bool: ...

    def clear(self) -> None: ...

    async def aload(self) -> TokenState | None: ...

    async def asave(self, state: TokenState) -> bool: ...


def _redacted(exc: BaseException, state: TokenState) -> str:
    """An error's text for a log line, without the state's tokens (a failed write may echo them)."""
    text = f"{type(exc).__name__}: {exc}"
    for secret in (state.refresh_token, state.access_token):
        if secret:
            text = text.replace(secret, "***")
    return text[:300]


async def _in_thread(func, /, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Run a sync Task SDK call off the event loop (asgiref's sync_to_async when available)."""
    try:
        from asgiref.sync import sync_to_async
    except ImportError:  # pragma: no cover - asgiref ships with Airflow
        return await asyncio.to_thread(func, *args, **kwargs)
    return await sync_to_async(func)(*args, **kwargs)


def read_error(where: str, exc: BaseException) -> IceProdTransientError:
    """A failed overlay read: transient (the overlay may hold the only valid token), never "none"."""
    return IceProdTransientError(
        f"Could not read the IceProd token-state overlay ({where}): {type(exc).__name__}. The newest "
        "refresh token may be stored there, so the refresh was not attempted with an older one; retry."
    )


def parse_overlay(
    read: Callable[[], str | bytes | None], where: str, errors: type[Exception] = Exception
) -> TokenState | None:
    """Read a stored overlay and parse it; a failed read is transient, never "no overlay"."""
    try:
        raw = read()
    except errors as exc:
        raise read_error(where, exc) from None
    return TokenState.from_json(raw, where=where)


class VariableKeyed:
    """A store of the overlay Variable ``iceprod_token_state__<conn_id>`` of one connection."""

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self.key = variable_name(conn_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(key={self.key!r})"


def in_task_context() -> bool:
    """True in a task or trigger process whose Task SDK is connected (``SUPERVISOR_COMMS`` set)."""
    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    return getattr(runner, "SUPERVISOR_COMMS", None) is not None


def in_server_context() -> bool:
    """True where Airflow reads connections from the metadata DB (``_AIRFLOW_PROCESS_CONTEXT=server``)."""
    return os.environ.get("_AIRFLOW_PROCESS_CONTEXT") == "server"


def default_state_store(conn_id: str, issuer: str, client_id: str) -> TokenStateStore:
    """The overlay for where this process runs: Task SDK, metadata DB or file; plus this host's file copy."""
    from airflow_provider_iceprod.auth.state_stores import (
        DbTokenStateStore,
        FileTokenStateStore,
        LayeredTokenStateStore,
    )

    local = FileTokenStateStore.for_connection(conn_id, issuer, client_id)
    primary: TokenStateStore | None = None
    if in_task_context():
        primary = VariableTokenStateStore(conn_id)
    elif in_server_context():
        primary = DbTokenStateStore(conn_id)
    if primary is None:
        return local if local is not None else VariableTokenStateStore(conn_id)
    return LayeredTokenStateStore(primary, local) if local is not None else primary


class VariableTokenStateStore(VariableKeyed):
    """The overlay in an Airflow Variable, through the Task SDK (works in tasks and triggers)."""

    #: Attempts for a write that fails for a reason other than "no Airflow API here".
    SAVE_ATTEMPTS = 3

    def _read_raw(self) -> str | None:
        """The Variable's value straight from the Execution API (no cache, no secrets backend).

        Not through ``Variable.get``: that cannot tell "not found" from a failed read, and it registers
        every value it returns with the masker of this process and of the supervisor, which would grow
        by one overlay per refresh in a long-lived triggerer.
        """
        runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
        comms = getattr(runner, "SUPERVISOR_COMMS", None)
        if comms is None:  # no Task SDK connection: nothing to read
            return None
        from airflow.sdk.execution_time.comms import ErrorResponse, GetVariable, VariableResult

        msg = comms.send(GetVariable(key=self.key))
        if isinstance(msg, ErrorResponse):
            if str(getattr(msg.error, "value", msg.error)) == "VARIABLE_NOT_FOUND":
                return None
            raise RuntimeError(f"{msg.error}: {msg.detail}")
        if isinstance(msg, VariableResult):
            return None if msg.value is None else str(msg.value)
        raise RuntimeError(f"unexpected answer {type(msg).__name__}")

    def load(self) -> TokenState | None:
        return parse_overlay(self._read_raw, f"Variable {self.key}")

    async def aload(self) -> TokenState | None:
        return await _in_thread(self.load)

    def _write(self, state: TokenState) -> None:
        from airflow.sdk import Variable

        with contextlib.suppress(Exception):  # never go backwards (same host: under the refresh lock)
            current = TokenState.from_json(self._read_raw())
            if current is not None and not state.supersedes(current) and current != state:
                log.info("IceProd: the overlay Variable %s already holds a newer refresh token", self.key)
                return
        Variable.set(
            self.key,
            state.to_json(),
            description=f"IceProd token state of connection {self.conn_id} (airflow-provider-iceprod)",
        )

    def _warn_unsaved(self, exc: BaseException, state: TokenState) -> None:
        log.warning(
            "IceProd connection %r: the issuer rotated the refresh token but it could not be saved to the "
            "Variable %s (%s). It is kept in this process's memory only; if this process ends before the "
            "next refresh, run `airflow-iceprod login --conn-id %s` or `airflow-iceprod refresh`.",
            self.conn_id,
            self.key,
            _redacted(exc, state),
            self.conn_id,
        )

    def _delay_after(self, exc: Exception, attempt: int, state: TokenState) -> float | None:
        """How long to wait before the next write; None (after a warning) when saving gives up.

        ``ImportError``: no task context, the Task SDK has no API connection here: final at once.
        """
        if isinstance(exc, ImportError) or attempt >= self.SAVE_ATTEMPTS:
            self._warn_unsaved(exc, state)
            return None
        return 0.2 * attempt

    def save(self, state: TokenState) -> bool:
        for attempt in range(1, self.SAVE_ATTEMPTS + 1):
            try:
                self._write(state)
                return True
            except Exception as exc:
                delay = self._delay_after(exc, attempt, state)
                if delay is None:
                    return False
                time.sleep(delay)
        return False  # pragma: no cover

    async def asave(self, state: TokenState) -> bool:
        for attempt in range(1, self.SAVE_ATTEMPTS + 1):
            try:
                await _in_thread(self._write, state)
                return True
            except Exception as exc:
                delay = self._delay_after(exc, attempt, state)
                if delay is None:
                    return False
                await asyncio.sleep(delay)
        return False  # pragma: no cover

    def clear(self) -> None:
        from airflow.sdk import Variable

        try:
            Variable.delete(self.key)
        except Exception as exc:
            log.warning(
                "Could not delete the IceProd token-state Variable %s: %s", self.key, type(exc).__name__
            )


class MemoryTokenStateStore:
    """An in-memory overlay (tests, or scripts that keep one process alive)."""

    def __init__(self, state: TokenState | None = None) -> None:
        self.state = state
        self.saves = 0

    def load(self) -> TokenState | None:
        return self.state

    def save(self, state: TokenState) -> bool:
        if state.supersedes(self.state):
            self.state = state
        self.saves += 1
        return True

    def clear(self) -> None:
        self.state = None

    async def aload(self) -> TokenState | None:
        return self.load()

    async def asave(self, state: TokenState) -> bool:
        return self.save(state)
