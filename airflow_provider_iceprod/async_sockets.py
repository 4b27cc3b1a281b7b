"""Cheaper keep-alive checks for the async clients' connection pool (issue 15).

Before each request and after each response, httpcore's pool asks every idle connection whether its
server has closed it (``get_extra_info("is_readable")``): about 20 times per request with 8
connections. Over anyio, each answer first looks the socket up through anyio's typed attributes,
which builds a dict of accessors per lookup; that was about a tenth of the client CPU of an async
call (``docs/performance.md``, "Why async trails threads"). The streams here remember their socket
when the connection is made and answer with one ``poll``; everything else goes to httpcore's own
backend unchanged (anyio or trio, TLS, timeouts, errors).

httpx has no public way to pass a network backend (and a ``transport=`` of our own would make it
ignore proxy environment variables), so :func:`install` sets the backend attribute of the client's
own pool; if a future httpx moves it, nothing is installed and the pool keeps its own (slower)
check, and ``tests/unit/test_async_sockets.py`` fails so that it is noticed.
"""

from __future__ import annotations

import select
import socket
from typing import Any

import httpx


def _readable(sock: socket.socket | None) -> bool:
    """Has the peer sent data or closed (what httpcore treats as "do not reuse")? Unknown: yes."""
    if sock is None:
        return True
    fd = sock.fileno()
    if fd < 0:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])


class _Stream:
    """One connection's network stream; only the readability check is answered here."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._sock: socket.socket | None = inner.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data: bytes = await self._inner.read(max_bytes, timeout)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> _Stream:
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return _readable(self._sock)
        return self._inner.get_extra_info(info)


class _Backend:
    """httpcore's network backend, with its streams wrapped in :class:`_Stream`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def connect_tcp(self, *args: Any, **kwargs: Any) -> _Stream:
        return _Stream(await self.inner.connect_tcp(*args, **kwargs))

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> _Stream:
        return _Stream(await self.inner.connect_unix_socket(*args, **kwargs))

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def _pool(client: httpx.AsyncClient) -> Any:
    """The connection pool of ``client``'s own transport (not of proxy mounts), if httpx still has one."""
    return getattr(getattr(client, "_transport", None), "_pool", None)


def install(client: httpx.AsyncClient) -> bool:
    """Give ``client``'s connection pool the cheaper check; say whether it could be installed."""
    pool = _pool(client)
    backend = getattr(pool, "_network_backend", None)
    if backend is None or not callable(getattr(backend, "connect_tcp", None)):
        return False
    if not isinstance(backend, _Backend):
        pool._network_backend = _Backend(backend)
    return True


def installed(client: httpx.AsyncClient) -> bool:
    """Does ``client``'s connection pool use the cheaper check?"""
    return isinstance(getattr(_pool(client), "_network_backend", None), _Backend)
