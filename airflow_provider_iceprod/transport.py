"""The one HTTP path to IceProd (and to its OpenID issuer): httpx, one retry policy, one error mapping.

Everything that goes over the network in this provider goes through :class:`Transport`:

* **Clients.** A process-wide ``httpx.Client`` per base URL (thread-safe, keep-alive) and an
  ``httpx.AsyncClient`` per (running event loop, base URL); an ``AsyncClient`` is never shared across
  event loops. Both are keyed by process id too, so a forked worker never reuses its parent's sockets.
* **One code path.** Building the request, handing out the bearer token, reading the answer and
  mapping errors happen in one sans-IO generator (:meth:`Transport._exchange`); the sync and async
  loops only perform the I/O it asks for, under the same tenacity policy (same predicate, same wait).
* **Retries** (tenacity, nothing underneath: httpx does not retry, so retries never multiply):
  transient errors only (timeouts, connection errors, 5xx, 429, 503), exponential backoff with full
  jitter, ``Retry-After`` honoured up to a cap. Other 4xx answers are final at once.
* **Expired tokens.** IceProd answers ``403 authentication failed`` for an expired token: the transport
  asks its token source for a fresh token once and re-sends once. Other 403s are final.
* **Non-idempotent requests** (``POST /actions/submit``, ``POST /datasets``) are re-sent only when the
  request provably never reached a handler (connect errors, 429, 503). Anything else raises
  :class:`~airflow_provider_iceprod.exceptions.IceProdAmbiguousError` for the caller to reconcile.

Messages read ``"<METHOD> <path>: <status> <IceProd's error text>"``; they never carry headers,
tokens or query strings.

httpx and tenacity are imported on first use, so importing :class:`RetrySettings` (triggers do) is cheap.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import random
import threading
import time
import weakref
from collections.abc import Generator, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from airflow_provider_iceprod import __version__
from airflow_provider_iceprod.exceptions import (
    IceProdAmbiguousError,
    IceProdConfigError,
    IceProdError,
    IceProdNotFoundError,
    IceProdPermissionError,
    IceProdRequestError,
    IceProdTransientError,
    IceProdValidationError,
)

if TYPE_CHECKING:
    import asyncio

    import httpx
    import tenacity

log = logging.getLogger(__name__)

USER_AGENT = f"airflow-provider-iceprod/{__version__}"

#: Requests that create something: re-sent only when they provably never reached a handler.
NON_IDEMPOTENT: frozenset[tuple[str, str]] = frozenset({("POST", "/actions/submit"), ("POST", "/datasets")})

#: IceProd's answer to a missing, invalid or expired token (it never answers 401).
EXPIRED_TOKEN_ERROR = "authentication failed"

PERMISSION_NOTE = "for non-admin tokens IceProd also answers 403 for a dataset that does not exist"


@runtime_checkable
class BearerSource(Protocol):
    """What the transport asks for a bearer token (implemented by ``auth.provider.TokenProvider``)."""

    def get_token(self, *, force_refresh: bool = False) -> str: ...

    async def aget_token(self, *, force_refresh: bool = False) -> str: ...


class StaticBearer:
    """A fixed access token (benchmarks, tests, short scripts). It cannot be refreshed."""

    def __init__(self, token: str) -> None:
        from airflow.sdk.log import mask_secret

        mask_secret(token)
        self._token = token

    def __repr__(self) -> str:
        return "StaticBearer(***)"

    def get_token(self, *, force_refresh: bool = False) -> str:
        return self._token

    async def aget_token(self, *, force_refresh: bool = False) -> str:
        return self._token


# --------------------------------------------------------------------------------------------------
# Retry settings: plain numbers, so they cross into triggers.
# --------------------------------------------------------------------------------------------------

#: ``retry_args`` keys and the RetrySettings field each one sets.
RETRY_ARG_KEYS: dict[str, str] = {
    "retry_limit": "retry_limit",
    "stop_after_attempt": "retry_limit",  # total attempts; stored as retries = attempts - 1
    "retry_delay": "retry_delay",
    "wait_base": "retry_delay",
    "max_delay": "max_delay",
    "wait_max": "max_delay",
    "retry_after_cap": "retry_after_cap",
    "timeout": "timeout",
}


def _number(name: str, value: Any, *, integer: bool = False, positive: bool = False) -> float | int:
    bad = isinstance(value, bool) or not isinstance(value, int | float)
    if not bad and integer and isinstance(value, float) and not value.is_integer():
        bad = True
    if bad or not math.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "an integer" if integer else "a number"
        limit = "> 0" if positive else ">= 0"
        raise IceProdConfigError(
            f"Retry setting {name!r} must be {kind} {limit} (plain values only, so they can be passed "
            f"to triggers), got {value!r}.",
            field=name,
        )
    return int(value) if integer else float(value)


@dataclass(frozen=True)
class RetrySettings:
    """How the transport retries. ``retry_limit`` is the number of re-sends after the first attempt."""

    retry_limit: int = 5
    retry_delay: float = 1.0
    max_delay: float = 60.0
    retry_after_cap: float = 120.0
    timeout: float = 30.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _number(
                f.name, getattr(self, f.name), integer=f.name == "retry_limit", positive=f.name == "timeout"
            )
            object.__setattr__(self, f.name, value)

    @property
    def attempts(self) -> int:
        """Total attempts per request (first try included)."""
        return self.retry_limit + 1

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetrySettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise IceProdConfigError(
                f"Unknown retry setting(s) {unknown}; known: {sorted(known)}.", field="retry_settings"
            )
        return cls(**dict(data))

    @classmethod
    def from_hook_args(
        cls,
        retry_limit: int = 5,
        retry_delay: float = 1.0,
        retry_args: Mapping[str, Any] | None = None,
        timeout: float = 30.0,
    ) -> RetrySettings:
        """Combine the hook's ``retry_limit``/``retry_delay``/``timeout`` with ``retry_args``.

        ``retry_args`` holds plain values only, e.g. ``{"stop_after_attempt": 3, "wait_max": 10}``;
        its keys win over the positional settings. Known keys: see :data:`RETRY_ARG_KEYS`.
        """
        values: dict[str, Any] = {"retry_limit": retry_limit, "retry_delay": retry_delay, "timeout": timeout}
        if retry_args is None:
            return cls(**values)
        if not isinstance(retry_args, Mapping):
            raise IceProdConfigError(
                f"retry_args must be a dict of plain values, got {type(retry_args).__name__}.",
                field="retry_args",
            )
        unknown = sorted(str(k) for k in retry_args if k not in RETRY_ARG_KEYS)
        if unknown:
            raise IceProdConfigError(
                f"Unknown retry_args key(s) {unknown}. Known keys: {sorted(RETRY_ARG_KEYS)}. "
                "retry_args takes plain values (no tenacity objects) so that they can be passed to triggers.",
                field="retry_args",
            )
        for key, value in retry_args.items():
            if key == "stop_after_attempt":
                attempts = _number("stop_after_attempt", value, integer=True, positive=True)
                values["retry_limit"] = int(attempts) - 1
            else:
                values[RETRY_ARG_KEYS[key]] = value
        return cls(**values)

    # The policy pieces the sync and async loops share -------------------------------------------

    def backoff(self, attempt_number: int) -> float:
        """Full-jitter exponential backoff after the ``attempt_number``-th failed attempt."""
        ceiling = min(self.max_delay, self.retry_delay * (2 ** max(attempt_number - 1, 0)))
        return random.uniform(0.0, ceiling)

    def wait_for(self, exc: BaseException | None, attempt_number: int) -> float:
        """Seconds to wait before the next attempt: ``Retry-After`` (capped) if sent, else backoff."""
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.retry_after_cap)
        return self.backoff(attempt_number)


def is_retryable(exc: BaseException) -> bool:
    """The one retry predicate: fresh transient errors that are safe to re-send.

    An error that already went through a transport's retries (``attempts`` set, e.g. from a nested
    token request) is not retried again, so retries never multiply.
    """
    return (
        isinstance(exc, IceProdTransientError)
        and not isinstance(exc, IceProdAmbiguousError)
        and getattr(exc, "attempts", None) is None
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; ``None`` if absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


# --------------------------------------------------------------------------------------------------
# Shared clients
# --------------------------------------------------------------------------------------------------

_clients_lock = threading.Lock()
_sync_clients: dict[tuple[int, str], httpx.Client] = {}
_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[int, str], tuple[httpx.AsyncClient, asyncio.Semaphore]]
] = weakref.WeakKeyDictionary()


#: Connections per client. The sync client is shared by every thread of the process. An async client
#: serves one event loop; there more connections (and a long queue inside httpcore, which rescans it on
#: every request) cost client CPU, so concurrent calls wait at a semaphore for a keep-alive connection.
SYNC_POOL_SIZE = 64
ASYNC_POOL_SIZE = 8


def _client_options(pool_size: int) -> dict[str, Any]:
    import httpx

    return {
        "limits": httpx.Limits(
            max_connections=pool_size, max_keepalive_connections=pool_size, keepalive_expiry=30.0
        ),
        "follow_redirects": False,
        "headers": {"User-Agent": USER_AGENT, "Accept": "application/json"},
    }


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def shared_client(base_url: str) -> httpx.Client:
    """The process-wide sync client for ``base_url``'s origin (thread-safe, keep-alive)."""
    key = (os.getpid(), _origin(base_url))
    client = _sync_clients.get(key)
    if client is None or client.is_closed:
        import httpx

        with _clients_lock:
            client = _sync_clients.get(key)
            if client is None or client.is_closed:
                client = httpx.Client(**_client_options(SYNC_POOL_SIZE))
                _sync_clients[key] = client
    return client


def _async_slot(base_url: str) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
    """The running loop's client for ``base_url``'s origin and the gate in front of its pool."""
    import asyncio

    loop = asyncio.get_running_loop()
    key = (os.getpid(), _origin(base_url))
    with _clients_lock:
        per_loop = _async_clients.get(loop)
        if per_loop is None:
            per_loop = _async_clients[loop] = {}
        slot = per_loop.get(key)
        if slot is None or slot[0].is_closed:
            import httpx

            client = httpx.AsyncClient(**_client_options(ASYNC_POOL_SIZE))
            slot = per_loop[key] = (client, asyncio.Semaphore(ASYNC_POOL_SIZE))
    return slot


def shared_async_client(base_url: str) -> httpx.AsyncClient:
    """The async client for ``base_url``'s origin on the running event loop (one per loop)."""
    return _async_slot(base_url)[0]


def close_shared_clients() -> None:
    """Close this process's sync clients (async ones die with their event loop)."""
    with _clients_lock:
        clients = list(_sync_clients.values())
        _sync_clients.clear()
    for client in clients:
        client.close()


async def aclose_loop_clients() -> None:
    """Close the async clients of the running event loop (call before the loop ends, if you care)."""
    import asyncio

    with _clients_lock:
        per_loop = _async_clients.pop(asyncio.get_running_loop(), {})
    for client, _gate in per_loop.values():
        await client.aclose()


# --------------------------------------------------------------------------------------------------
# One request, sans-IO
# --------------------------------------------------------------------------------------------------


@dataclass
class _Call:
    method: str
    url: str
    path: str  # for messages: the URL path, no query string
    params: Mapping[str, Any] | None
    json: Any
    form: Mapping[str, Any] | None
    idempotent: bool
    refreshed: bool = False  # the one token refresh after "403 authentication failed" was spent


@dataclass(frozen=True)
class _NeedToken:
    force_refresh: bool


@dataclass(frozen=True)
class _NeedSend:
    kwargs: dict[str, Any] = field(repr=False)  # holds the bearer token: never log it


def _json_or_none(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _server_error_text(body: Any) -> str | None:
    """IceProd's ``error`` (or the OIDC ``error`` + ``error_description``) from an error body."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    description = body.get("error_description")
    if isinstance(error, str) and isinstance(description, str) and description:
        return f"{error}: {description}"
    if isinstance(error, str) and error:
        return error
    if isinstance(body.get("message"), str):
        return str(body["message"])
    return None


def _looks_like_html(response: httpx.Response) -> bool:
    content_type = response.headers.get("content-type", "")
    return "html" in content_type or response.text.lstrip().lower().startswith(("<!doctype", "<html"))


class Transport:
    """HTTP to one service (IceProd's API, its actions server, or the OpenID issuer).

    ``token_source`` is ``None`` for unauthenticated calls (the OpenID token endpoint, form bodies).
    ``path`` may be absolute (``https://...``) for endpoints found by discovery.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token_source: BearerSource | None,
        retry: RetrySettings,
        service: str = "IceProd",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token_source = token_source
        self.retry = retry
        self.service = service

    def __repr__(self) -> str:
        return f"Transport({self.base_url!r}, service={self.service!r}, retry={self.retry!r})"

    # Public API -----------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        form: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Send one request with retries; return the decoded JSON answer (``None`` when empty)."""
        call = self._call(method, path, params, json, form, idempotent)
        retrying = self._tenacity().Retrying(**self._policy(call))
        try:
            return retrying(self._attempt, call)
        except IceProdError as exc:
            self._give_up(exc, retrying.statistics)
            raise

    async def arequest(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        form: Mapping[str, Any] | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """The async form of :meth:`request`; never blocks the event loop."""
        call = self._call(method, path, params, json, form, idempotent)
        retrying = self._tenacity().AsyncRetrying(**self._policy(call))
        try:
            return await retrying(self._aattempt, call)
        except IceProdError as exc:
            self._give_up(exc, retrying.statistics)
            raise

    # The shared policy -----------------------------------------------------------------------------

    @staticmethod
    def _tenacity() -> Any:
        import tenacity

        return tenacity

    def _policy(self, call: _Call) -> dict[str, Any]:
        """tenacity arguments shared by the sync and async loops."""
        tc = self._tenacity()

        def wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            return self.retry.wait_for(exc, state.attempt_number)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                "%s request failed: %s; retry %d of %d in %.2f s",
                self.service,
                exc,
                state.attempt_number,
                self.retry.retry_limit,
                delay,
            )

        return {
            "stop": tc.stop_after_attempt(self.retry.attempts),
            "wait": wait,
            "retry": tc.retry_if_exception(is_retryable),
            "before_sleep": before_sleep,
            "reraise": True,
        }

    @staticmethod
    def _give_up(exc: IceProdError, statistics: Mapping[str, Any]) -> None:
        """Mark an error as final for this transport (so nothing retries it again)."""
        attempts = int(statistics.get("attempt_number", 1))
        if getattr(exc, "attempts", None) is None:
            exc.attempts = attempts  # type: ignore[attr-defined]
            if attempts > 1 and isinstance(exc, IceProdTransientError):
                exc.message = f"{exc.message} (gave up after {attempts} attempts)"
                exc.args = (exc.message,)

    # One attempt: the sans-IO exchange and its two drivers ----------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        json: Any,
        form: Mapping[str, Any] | None,
        idempotent: bool | None,
    ) -> _Call:
        method = method.upper()
        if json is not None and form is not None:
            raise ValueError("pass either json= or form=, not both")
        if path.startswith(("http://", "https://")):
            url = path
        else:
            if not path.startswith("/"):
                path = "/" + path
            url = self.base_url + path
        message_path = urlsplit(url).path or "/"
        if idempotent is None:
            idempotent = (method, message_path.rstrip("/") or "/") not in NON_IDEMPOTENT
        return _Call(method, url, message_path, params, json, form, idempotent)

    def _exchange(self, call: _Call) -> Generator[_NeedToken | _NeedSend, Any, Any]:
        """One attempt (plus at most one token refresh): yields what it needs, returns the answer."""
        force_refresh = False
        while True:
            token = (yield _NeedToken(force_refresh)) if self.token_source is not None else None
            result = yield _NeedSend(self._request_kwargs(call, token))
            if isinstance(result, BaseException):
                raise self._transport_error(call, result) from result
            if self._token_expired(result) and self.token_source is not None and not call.refreshed:
                call.refreshed = force_refresh = True
                log.warning(
                    "%s rejected the access token for %s %s (403 %s); refreshing it once and re-sending",
                    self.service,
                    call.method,
                    call.path,
                    EXPIRED_TOKEN_ERROR,
                )
                continue
            return self._interpret(call, result)

    def _attempt(self, call: _Call) -> Any:
        import httpx

        exchange = self._exchange(call)
        client = shared_client(call.url)
        reply: Any = None
        try:
            while True:
                need = exchange.send(reply)
                if isinstance(need, _NeedToken):
                    assert self.token_source is not None
                    reply = self.token_source.get_token(force_refresh=need.force_refresh)
                    continue
                try:
                    reply = client.send(client.build_request(**need.kwargs))
                except httpx.HTTPError as exc:
                    reply = exc
        except StopIteration as done:
            return done.value

    async def _aattempt(self, call: _Call) -> Any:
        import httpx

        exchange = self._exchange(call)
        client, gate = _async_slot(call.url)
        reply: Any = None
        try:
            while True:
                need = exchange.send(reply)
                if isinstance(need, _NeedToken):
                    assert self.token_source is not None
                    reply = await self.token_source.aget_token(force_refresh=need.force_refresh)
                    continue
                try:
                    async with gate:
                        reply = await client.send(client.build_request(**need.kwargs))
                except httpx.HTTPError as exc:
                    reply = exc
        except StopIteration as done:
            return done.value

    # Building requests and reading answers -------------------------------------------------------

    def _request_kwargs(self, call: _Call, token: str | None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kwargs: dict[str, Any] = {
            "method": call.method,
            "url": call.url,
            "headers": headers,
            "timeout": self.retry.timeout,
        }
        if call.params:
            kwargs["params"] = {k: v for k, v in call.params.items() if v is not None}
        if call.json is not None:
            kwargs["json"] = call.json
        if call.form is not None:
            kwargs["data"] = dict(call.form)
        return kwargs

    @staticmethod
    def _token_expired(response: httpx.Response) -> bool:
        return (
            response.status_code == 403 and _server_error_text(_json_or_none(response)) == EXPIRED_TOKEN_ERROR
        )

    def _interpret(self, call: _Call, response: httpx.Response) -> Any:
        if 200 <= response.status_code < 300:
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                return response.text
        raise self._http_error(call, response)

    def _http_error(self, call: _Call, response: httpx.Response) -> IceProdError:
        status = response.status_code
        body = _json_or_none(response)
        server_text = _server_error_text(body)
        if server_text is not None:
            text = server_text
        elif status == 404 and _looks_like_html(response):
            text = f"unknown route (the {self.service} server has no such URL; check the connection's URLs)"
        elif response.text and not _looks_like_html(response):
            text = response.text.strip().splitlines()[0][:200]
        else:
            text = response.reason_phrase or "error"
        message = f"{call.method} {call.path}: {status} {text}"
        details: dict[str, Any] = {
            "status_code": status,
            "iceprod_message": server_text,
            "method": call.method,
            "path": call.path,
            "body": body,
        }
        if status == 400:
            return IceProdValidationError(message, **details)
        if status == 403:
            if server_text == EXPIRED_TOKEN_ERROR and call.refreshed:
                message += " (a freshly refreshed token was rejected too: check the connection's oauth_url)"
            return IceProdPermissionError(f"{message} ({PERMISSION_NOTE})", **details)
        if status == 404:
            return IceProdNotFoundError(message, **details)
        if status in (429, 503) or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if not call.idempotent and status not in (429, 503):
                return IceProdAmbiguousError(
                    f"{message}; the server may have acted on this {call.method}, so it was not re-sent",
                    retry_after=retry_after,
                    **details,
                )
            return IceProdTransientError(message, retry_after=retry_after, **details)
        return IceProdRequestError(message, **details)

    def _transport_error(self, call: _Call, exc: BaseException) -> IceProdError:
        import httpx

        name = type(exc).__name__
        details: dict[str, Any] = {"method": call.method, "path": call.path}
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return IceProdConfigError(f"{call.method} {call.path}: bad URL ({name}: {exc})", **details)
        if isinstance(exc, httpx.TimeoutException):
            reason = f"no answer within {self.retry.timeout:g} s ({name})"
        else:
            reason = f"connection failed ({name}: {exc})" if str(exc) else f"connection failed ({name})"
        message = f"{call.method} {call.path}: {reason}"
        never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        if not call.idempotent and not never_sent:
            return IceProdAmbiguousError(
                f"{message}; the server may have acted on this {call.method}, so it was not re-sent",
                **details,
            )
        return IceProdTransientError(message, **details)
