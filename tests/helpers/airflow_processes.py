"""Starting, checking and stopping the real processes the upper test tiers run (loopback only).

Shared by the browser, production-like, distributed and end-to-end tests: free ports, health checks,
process-group shutdown, and the ``airflow-iceprod login`` that writes a connection.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(
    url: str, alive: Callable[[], bool], what: str, timeout: float, details: Callable[[], str] = str
) -> None:
    """Poll ``url`` until it answers 200; fail early when the process behind it (``alive``) died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{what} exited early{details()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"{what} not healthy after {timeout} s")


def start_service(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """``airflow <argv>`` in its own process group, output to ``log_path``; stop it with :func:`stop_group`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [str(BIN / "airflow"), *argv],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_api_server(port: int, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Airflow's api-server on 127.0.0.1:``port`` with one worker."""
    return start_service(["api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"], env, log_path)


def wait_api_server(port: int, proc: subprocess.Popen[Any], timeout: float = 120) -> None:
    """Airflow's api-server on ``port`` answers its health check."""
    url = f"http://127.0.0.1:{port}/api/v2/monitor/health"
    wait_healthy(url, lambda: proc.poll() is None, "api-server", timeout, lambda: f" with {proc.returncode}")


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM the process group started with ``start_new_session=True``; SIGKILL it after 20 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def login_args(ip: Any, conn_id: str = "iceprod_default") -> list[str]:
    """``airflow-iceprod login`` against the stand-in ``ip`` (its device flow auto-approves)."""
    return [
        str(BIN / "airflow-iceprod"),
        "login",
        "--conn-id",
        conn_id,
        "--api-url",
        ip.api_url,
        "--oauth-url",
        ip.issuer_url,
        "--website-url",
        ip.website_url,
        "--no-qr",
    ]


def run_checked(args: list[str], env: dict[str, str], timeout: float = 180) -> str:
    """Run a command to completion; fail the test with its output tails unless it exits 0."""
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (
        f"{args[:2]} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout
