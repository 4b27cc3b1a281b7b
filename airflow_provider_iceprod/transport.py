"""The one HTTP path to IceProd (and to its OpenID issuer): the request, error mapping, idempotency.

Every request of the provider goes through :class:`Transport`: process-wide ``httpx`` clients, the
retry policy of :mod:`airflow_provider_iceprod.retry` (tenacity; httpx itself never retries), the
``httpx.Auth`` it is given (:class:`~airflow_provider_iceprod.auth.httpx_auth.IceProdAuth` for
IceProd) and one mapping from answers to exceptions. The contract (errors, retries, idempotency,
clients) is stated once in ``docs/architecture.md``.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypedDict, Unpack
from urllib.parse import urlsplit

import httpx

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
from airflow_provider_iceprod.json_chunks import aloads
from airflow_provider_iceprod.loop_guard import refuse_running_loop
from airflow_provider_iceprod.retry import RetrySettings, aretrying, mark_final, parse_retry_after, retrying

USER_AGENT = f"airflow-provider-iceprod/{__version__}"

#: Requests that create something: re-sent only when they provably never reached a handler.
NON_IDEMPOTENT: frozenset[tuple[str, str]] = frozenset({("POST", "/actions/submit"), ("POST", "/datasets")})

#: IceProd's answer to a missing, invalid or expired token (``auth.httpx_auth`` refreshes once on it).
EXPIRED_TOKEN_ERROR = "authentication failed"

PERMISSION_NOTE = "for non-admin tokens IceProd also answers 403 for a dataset that does not exist"

# --------------------------------------------------------------------------------------------------
# Shared clients
# --------------------------------------------------------------------------------------------------

#: Connections per client. The sync client is shared by every thread of the process. An async client
#: serves one event loop; there more connections (and a long queue inside httpcore, which rescans it on
#: every request) cost client CPU, so concurrent calls wait at a semaphore for a keep-alive connection.
#: httpcore checks every idle connection's socket each time it hands one out: with 4 connections an
#: async call costs about 25% less client CPU than with 8 (benchmarks/hook_throughput.py), and 4 in
#: flight per loop cover the shared poller (1 list + 4 count requests per interval).
SYNC_POOL_SIZE = 64
ASYNC_POOL_SIZE = 4
#: Successful answers longer than this (bytes) are decoded in steps by the async path.
LARGE_ANSWER = 256 * 1024

_clients_lock = threading.Lock()
_sync_clients: dict[tuple[int, str], httpx.Client] = {}


class _LoopClients:
    """The async clients of one event loop, closed when the loop shuts down."""

    def __init__(self) -> None:
        self.clients: dict[tuple[int, str], httpx.AsyncClient] = {}
        self.gates: dict[tuple[int, str, str], asyncio.Semaphore] = {}
        #: clients being built (in a thread), shared by the callers that arrive meanwhile
        self.building: dict[tuple[int, str], asyncio.Task[httpx.AsyncClient]] = {}
        self.closer_started = False
        # Only for loops that take no attributes (the closer refers to its loop: kept here, it
        # would keep this WeakKeyDictionary entry alive until the loop shuts down).
        self.closer: AsyncIterator[None] | None = None


_loop_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClients] = (
    weakref.WeakKeyDictionary()
)


def _client_options(pool_size: int) -> dict[str, Any]:
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
        with _clients_lock:
            client = _sync_clients.get(key)
            if client is None or client.is_closed:
                client = _sync_clients[key] = httpx.Client(**_client_options(SYNC_POOL_SIZE))
    return client


async def _close_at_shutdown(clients: _LoopClients) -> AsyncIterator[None]:
    """Parked at its ``yield`` for the loop's lifetime. ``loop.shutdown_asyncgens()`` (which
    ``asyncio.run`` and the triggerer call before closing the loop) finalises it: the loop's clients
    are closed with it, so a new event loop per call (scripts, notebooks) leaks no sockets."""
    try:
        yield
    finally:
        loop = asyncio.get_running_loop()
        with _clients_lock:
            _loop_clients.pop(loop, None)
            open_clients = list(clients.clients.values())
            clients.clients.clear()
        for client in open_clients:
            await client.aclose()


def _start_closer(loop: asyncio.AbstractEventLoop, clients: _LoopClients) -> AsyncIterator[None]:
    closer = _close_at_shutdown(clients)
    try:
        loop._iceprod_http_closer = closer  # type: ignore[attr-defined]  # lives and dies with the loop
    except AttributeError:  # a loop without __dict__ (uvloop)
        clients.closer = closer
    return closer


async def _async_slot(base_url: str, service: str) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
    """The running loop's client for ``base_url``'s origin, and the service's gate in front of it.

    Each service has its own gate: an IceProd request waiting inside the gate for a token refresh
    must not keep the issuer's token request (often on the same origin) from being sent.
    """
    loop = asyncio.get_running_loop()
    key = (os.getpid(), _origin(base_url))
    known = _loop_clients.get(loop)
    if known is not None:  # the common case, without the lock: this loop's client and gate exist
        client = known.clients.get(key)
        gate = known.gates.get((*key, service))
        if client is not None and gate is not None and not client.is_closed:
            return client, gate
    closer = None
    with _clients_lock:
        clients = _loop_clients.get(loop)
        if clients is None:
            clients = _loop_clients[loop] = _LoopClients()
        client = clients.clients.get(key)
        building = None
        if client is None or client.is_closed:
            building = clients.building.get(key)
            if building is None:  # built in a thread: httpx builds its SSL context then (10-20 ms)
                building = clients.building[key] = loop.create_task(
                    asyncio.to_thread(httpx.AsyncClient, **_client_options(ASYNC_POOL_SIZE))
                )
    if building is not None:
        try:
            await asyncio.shield(building)
        finally:  # the first caller back installs it (a failed build is tried again next time)
            with _clients_lock:
                if building.done() and clients.building.get(key) is building:
                    del clients.building[key]
                    if not building.cancelled() and building.exception() is None:
                        clients.clients[key] = building.result()
    with _clients_lock:
        client = clients.clients[key]
        gate = clients.gates.get((*key, service))
        if gate is None:
            gate = clients.gates[(*key, service)] = asyncio.Semaphore(ASYNC_POOL_SIZE)
        if not clients.closer_started:
            clients.closer_started = True
            closer = _start_closer(loop, clients)
    if closer is not None:
        await closer.__anext__()  # first iteration: registers it for this loop's shutdown_asyncgens()
    return client, gate


async def shared_async_client(base_url: str) -> httpx.AsyncClient:
    """The async client for ``base_url``'s origin on the running event loop (one per loop)."""
    return (await _async_slot(base_url, "IceProd"))[0]


# --------------------------------------------------------------------------------------------------
# Reading answers
# --------------------------------------------------------------------------------------------------


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


class RequestOptions(TypedDict, total=False):
    """The keyword arguments of :meth:`Transport.request` and :meth:`Transport.arequest`."""

    params: Mapping[str, Any] | None
    json: Any
    form: Mapping[str, Any] | None
    idempotent: bool | None


class Transport:
    """HTTP to one service (IceProd's API, its actions server, the OpenID issuer, Airflow's API).

    ``auth`` authenticates each request (``None`` for the token endpoint and other open routes).
    ``path`` may be absolute (``https://...``) for endpoints found by discovery.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None,
        retry: RetrySettings,
        service: str = "IceProd",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth
        self.retry = retry
        self.service = service

    def __repr__(self) -> str:
        return f"Transport({self.base_url!r}, service={self.service!r}, retry={self.retry!r})"

    # Public API -----------------------------------------------------------------------------------

    def request(self, method: str, path: str, **options: Unpack[RequestOptions]) -> Any:
        """Send one request with retries; return the decoded JSON answer (``None`` when empty).

        ``options`` (:class:`RequestOptions`): ``params`` (the query; ``None`` values dropped),
        ``json`` or ``form`` (the body), ``idempotent`` (may it be re-sent after an ambiguous
        failure; default: every route but those in ``NON_IDEMPOTENT``)."""
        refuse_running_loop(f"{self.service} request {method.upper()} {urlsplit(path).path or '/'}")
        client = shared_client(self._url(path))
        request, idempotent = self._build(client, method, path, options)
        try:  # the first attempt needs no retry machinery (most calls end here)
            return self._send(client, request, idempotent)
        except IceProdError as exc:
            first: IceProdError | None = exc

        def attempt() -> Any:  # attempt 1 is the failure above: the policy decides from it
            nonlocal first
            if first is not None:
                failed, first = first, None
                raise failed
            return self._send(client, request, idempotent)

        policy = retrying(self.retry, self.service)
        try:
            return policy(attempt)
        except IceProdError as exc:
            mark_final(exc, int(policy.statistics.get("attempt_number", 1)))
            raise

    async def arequest(self, method: str, path: str, **options: Unpack[RequestOptions]) -> Any:
        """The async form of :meth:`request`; never blocks the event loop."""
        client, gate = await _async_slot(self._url(path), self.service)
        request, idempotent = self._build(client, method, path, options)
        try:  # the first attempt needs no retry machinery (most calls end here)
            return await self._asend(client, gate, request, idempotent)
        except IceProdError as exc:
            first: IceProdError | None = exc

        async def attempt() -> Any:  # attempt 1 is the failure above: the policy decides from it
            nonlocal first
            if first is not None:
                failed, first = first, None
                raise failed
            return await self._asend(client, gate, request, idempotent)

        policy = aretrying(self.retry, self.service)
        try:
            return await policy(attempt)
        except IceProdError as exc:
            mark_final(exc, int(policy.statistics.get("attempt_number", 1)))
            raise

    # One attempt ----------------------------------------------------------------------------------

    def _send(self, client: httpx.Client, request: httpx.Request, idempotent: bool) -> Any:
        try:
            response = client.send(request, auth=self.auth)
        except httpx.HTTPError as exc:
            raise self._transport_error(request, idempotent, exc) from exc
        return self._interpret(request, idempotent, response)

    async def _asend(
        self, client: httpx.AsyncClient, gate: asyncio.Semaphore, request: httpx.Request, idempotent: bool
    ) -> Any:
        try:
            async with gate:
                response = await client.send(request, auth=self.auth)
        except httpx.HTTPError as exc:
            raise self._transport_error(request, idempotent, exc) from exc
        if 200 <= response.status_code < 300 and len(response.content) > LARGE_ANSWER:
            try:  # a long list (thousands of datasets): decoded in steps, the loop runs between them
                return await aloads(response.text)
            except ValueError:
                return response.text
        return self._interpret(request, idempotent, response)

    # Building requests and reading answers -------------------------------------------------------

    def _url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def _build(
        self, client: httpx.Client | httpx.AsyncClient, method: str, path: str, options: RequestOptions
    ) -> tuple[httpx.Request, bool]:
        """The request, and whether it is idempotent (may be re-sent after an ambiguous failure)."""
        params, json, form = options.get("params"), options.get("json"), options.get("form")
        if json is not None and form is not None:
            raise ValueError("pass either json= or form=, not both")
        try:
            request = client.build_request(
                method.upper(),
                self._url(path),
                params={k: v for k, v in params.items() if v is not None} if params else None,
                json=json,
                data=dict(form) if form is not None else None,
                timeout=self.retry.timeout,
            )
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise IceProdConfigError(
                f"{method.upper()} {path}: bad URL ({type(exc).__name__}: {exc})"
            ) from None
        idempotent = options.get("idempotent")
        if idempotent is None:
            idempotent = (request.method, request.url.path.rstrip("/") or "/") not in NON_IDEMPOTENT
        return request, idempotent

    def _interpret(self, request: httpx.Request, idempotent: bool, response: httpx.Response) -> Any:
        if 200 <= response.status_code < 300:
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                return response.text
        raise self._http_error(request, idempotent, response)

    def _http_error(self, request: httpx.Request, idempotent: bool, response: httpx.Response) -> IceProdError:
        method, path = request.method, request.url.path or "/"
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
        message = f"{method} {path}: {status} {text}"
        details: dict[str, Any] = {
            "status_code": status,
            "iceprod_message": server_text,
            "method": method,
            "path": path,
            "body": body,
        }
        if status == 400:
            return IceProdValidationError(message, **details)
        if status == 403:
            if server_text == EXPIRED_TOKEN_ERROR and self.auth is not None and response.history:
                message += " (a freshly refreshed token was rejected too: check the connection's oauth_url)"
            return IceProdPermissionError(f"{message} ({PERMISSION_NOTE})", **details)
        if status == 404:
            return IceProdNotFoundError(message, **details)
        if status in (429, 503) or status >= 500:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            if not idempotent and status not in (429, 503):
                return IceProdAmbiguousError(
                    f"{message}; the server may have acted on this {method}, so it was not re-sent",
                    retry_after=retry_after,
                    **details,
                )
            return IceProdTransientError(message, retry_after=retry_after, **details)
        return IceProdRequestError(message, **details)

    def _transport_error(
        self, request: httpx.Request, idempotent: bool, exc: httpx.HTTPError
    ) -> IceProdError:
        method, path = request.method, request.url.path or "/"
        name = type(exc).__name__
        details: dict[str, Any] = {"method": method, "path": path}
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return IceProdConfigError(f"{method} {path}: bad URL ({name}: {exc})", **details)
        if isinstance(exc, httpx.TimeoutException):
            reason = f"no answer within {self.retry.timeout:g} s ({name})"
        else:
            reason = f"connection failed ({name}: {exc})" if str(exc) else f"connection failed ({name})"
        message = f"{method} {path}: {reason}"
        never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        if not idempotent and not never_sent:
            return IceProdAmbiguousError(
                f"{message}; the server may have acted on this {method}, so it was not re-sent",
                **details,
            )
        return IceProdTransientError(message, **details)
