"""``airflow_provider_iceprod.async_sockets``: the async pool's keep-alive check (issue 15)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from airflow_provider_iceprod import async_sockets
from airflow_provider_iceprod.transport import ASYNC_POOL_SIZE, shared_async_client


def test_readable_is_false_for_a_quiet_socket_and_true_once_the_peer_sends_or_closes() -> None:
    ours, peer = socket.socketpair()
    try:
        assert async_sockets._readable(ours) is False
        peer.sendall(b"x")
        assert async_sockets._readable(ours) is True
        ours.recv(1)
        assert async_sockets._readable(ours) is False
        peer.close()
        assert async_sockets._readable(ours) is True  # EOF: the server closed it
    finally:
        ours.close()
    assert async_sockets._readable(ours) is True  # closed here: never reuse
    assert async_sockets._readable(None) is True


def test_the_loops_client_uses_the_cheaper_check(iceprod_server) -> None:
    """Fails if httpx moves its pool's backend attribute (then the check falls back to httpcore's)."""

    async def client_and_checks() -> tuple[bool, int]:
        client = await shared_async_client(iceprod_server.api_url)
        calls = 0
        real = async_sockets._readable

        def counting(sock: socket.socket | None) -> bool:
            nonlocal calls
            calls += 1
            return real(sock)

        async_sockets._readable = counting
        try:
            await asyncio.gather(
                *(client.get(iceprod_server.api_url + "/") for _ in range(3 * ASYNC_POOL_SIZE))
            )
        finally:
            async_sockets._readable = real
        return async_sockets.installed(client), calls

    installed, calls = asyncio.run(client_and_checks())
    assert installed
    assert calls > 0  # the pool asked our streams, not anyio's


async def _closing_server(accepted: list[int]) -> asyncio.Server:
    """Answers one request per connection, then closes it without saying so (no ``Connection: close``)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    """A POST is never re-sent, so a reused dead connection would fail it: the check must see the EOF."""

    async def scenario() -> list[int]:
        accepted: list[int] = []
        server = await _closing_server(accepted)
        port = server.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/datasets"
        try:
            client = await shared_async_client(url)
            for _ in range(3):
                response = await client.post(url, json={})
                assert response.status_code == 200
                await asyncio.sleep(0.2)  # the server has closed the idle connection by now
        finally:
            server.close()
            await server.wait_closed()
        return accepted

    assert len(asyncio.run(scenario())) == 3


@pytest.mark.parametrize("attribute", ["_transport", "_pool"])
def test_install_reports_when_httpx_has_no_such_attribute(attribute: str, monkeypatch) -> None:
    import httpx

    client = httpx.AsyncClient()
    target = client if attribute == "_transport" else client._transport
    monkeypatch.delattr(target, attribute)
    assert async_sockets.install(client) is False
    assert async_sockets.installed(client) is False
