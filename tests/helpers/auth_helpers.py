"""Helpers for the credential tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

from typing import Any

from airflow_provider_iceprod.retry import RetrySettings
from airflow_provider_iceprod.settings import ConnectionSettings
from airflow_provider_iceprod.testing import LocalIceProd

FAST_RETRY = RetrySettings(retry_limit=2, retry_delay=0.01, max_delay=0.05, timeout=5.0)


def settings_for(
    ip: LocalIceProd, refresh_token: str | None = None, conn_id: str = "iceprod_test", **extra: Any
):
    """ConnectionSettings pointing at ``ip`` with ``refresh_token`` (and extra overrides)."""
    fields = ip.connection_extra(refresh_token)
    password = extra.pop("password", None)
    fields.update(extra)
    return ConnectionSettings.from_fields(conn_id, ip.api_url, password, fields)


class StaticServer:
    """A tiny real HTTP server on 127.0.0.1 answering every GET/POST with one fixed response.

    For answers the stand-in never gives on purpose (a discovery document that is not one).
    """

    def __init__(self, body: bytes, status: int = 200, content_type: str = "application/json") -> None:
        import http.server
        import threading

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                outer.requests += 1
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.requests = 0
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> StaticServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def closed_port_url() -> str:
    """A loopback URL where nothing listens."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/auth/realms/IceCube"
