"""The token-state overlay: where rotated refresh tokens are kept.

Airflow 3 tasks and triggers cannot write Connections, but they can write Variables. A rotated
refresh token therefore goes to the Variable ``iceprod_token_state__<conn_id>`` (the name contains
"token", so Airflow encrypts it at rest and masks it in logs), as JSON::

    {"refresh_token": "...", "saved_at": 1700000000.0, "issuer": "https://...", "client_id": "...",
     "fingerprint_of_base": "<sha256 prefix of the connection's refresh token>"}

Variables are read and written through the Task SDK only (``airflow.sdk.Variable``), never the ORM.
Outside a task or trigger (a plain script, a notebook) there is no API to write to: reads then see no
overlay and writes log a warning and keep the token in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol, runtime_checkable

from airflow_provider_iceprod.auth.tokens import TokenState, mask_token

log = logging.getLogger(__name__)

VARIABLE_PREFIX = "iceprod_token_state__"


def variable_name(conn_id: str) -> str:
    """The overlay Variable of ``conn_id`` (contains "token": encrypted and masked by Airflow)."""
    return f"{VARIABLE_PREFIX}{conn_id}"


@runtime_checkable
class TokenStateStore(Protocol):
    """Where the newest refresh token of one connection lives. Implementations never raise on read."""

    def load(self) -> TokenState | None: ...

    def save(self, state: TokenState) -> bool:
        """Persist ``state``; False (after logging why) when it could not be persisted."""
        ...

    def clear(self) -> None: ...

    async def aload(self) -> TokenState | None: ...

    async def asave(self, state: TokenState) -> bool: ...


def _redacted(exc: BaseException, secret: str) -> str:
    text = f"{type(exc).__name__}: {exc}"
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


class VariableTokenStateStore:
    """The overlay in an Airflow Variable, through the Task SDK (works in tasks and triggers)."""

    #: Attempts for a write that fails for a reason other than "no Airflow API here".
    SAVE_ATTEMPTS = 3

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self.key = variable_name(conn_id)

    def __repr__(self) -> str:
        return f"VariableTokenStateStore(key={self.key!r})"

    def _read_raw(self) -> str | None:
        from airflow.sdk import Variable

        with contextlib.suppress(Exception):  # another worker may have written it: never trust a cached copy
            from airflow.sdk.execution_time.cache import SecretCache

            SecretCache.invalidate_variable(self.key)
        value = Variable.get(self.key, default=None)
        return None if value is None else str(value)

    def load(self) -> TokenState | None:
        try:
            raw = self._read_raw()
        except Exception as exc:
            log.warning(
                "Could not read the IceProd token-state Variable %s: %s", self.key, type(exc).__name__
            )
            return None
        state = TokenState.from_json(raw)
        if state is not None:
            mask_token(state.refresh_token)
        return state

    async def aload(self) -> TokenState | None:
        try:
            raw = await _in_thread(self._read_raw)
        except Exception as exc:
            log.warning(
                "Could not read the IceProd token-state Variable %s: %s", self.key, type(exc).__name__
            )
            return None
        state = TokenState.from_json(raw)
        if state is not None:
            from airflow_provider_iceprod.auth.tokens import amask_token

            await amask_token(state.refresh_token)
        return state

    def _write(self, state: TokenState) -> None:
        from airflow.sdk import Variable

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
            _redacted(exc, state.refresh_token),
            self.conn_id,
        )

    def save(self, state: TokenState) -> bool:
        for attempt in range(1, self.SAVE_ATTEMPTS + 1):
            try:
                self._write(state)
                return True
            except ImportError as exc:  # no task context: the Task SDK has no API connection here
                self._warn_unsaved(exc, state)
                return False
            except Exception as exc:
                if attempt == self.SAVE_ATTEMPTS:
                    self._warn_unsaved(exc, state)
                    return False
                time.sleep(0.2 * attempt)
        return False  # pragma: no cover

    async def asave(self, state: TokenState) -> bool:
        for attempt in range(1, self.SAVE_ATTEMPTS + 1):
            try:
                await _in_thread(self._write, state)
                return True
            except ImportError as exc:
                self._warn_unsaved(exc, state)
                return False
            except Exception as exc:
                if attempt == self.SAVE_ATTEMPTS:
                    self._warn_unsaved(exc, state)
                    return False
                await asyncio.sleep(0.2 * attempt)
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
        self.state = state
        self.saves += 1
        return True

    def clear(self) -> None:
        self.state = None

    async def aload(self) -> TokenState | None:
        return self.load()

    async def asave(self, state: TokenState) -> bool:
        return self.save(state)
