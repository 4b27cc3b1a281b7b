"""``airflow-iceprod login|logout --airflow-url``: through a real Airflow api-server's REST API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow_processes import free_port, start_api_server

from airflow_provider_iceprod.testing import LocalIceProd

BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.production, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def api_server(
    airflow_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, dict[str, str]]]:
    """``airflow api-server`` on loopback with the simple auth manager and a known admin password."""
    home = tmp_path_factory.mktemp("api-server")
    passwords = home / "passwords.json"
    passwords.write_text(json.dumps({"admin": "s3cret-admin-pw"}))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API_AUTH__JWT_SECRET": "rest-api-test-jwt-secret-0123456789abcdef",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
        }
    )
    proc = start_api_server(port, env, home / "api-server.log")
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError((home / "api-server.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("api-server did not become healthy")
            time.sleep(0.5)
        yield url, env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _db_extra(conn_id: str) -> dict | None:
    from airflow.models import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        conn = session.scalar(select(Connection).where(Connection.conn_id == conn_id))
        return None if conn is None else conn.extra_dejson


def test_login_and_logout_through_the_rest_api(
    api_server: tuple[str, dict[str, str]], tmp_path: Path
) -> None:
    url, env = api_server
    env = {
        **env,
        "AIRFLOW_ICEPROD_LOCK_DIR": str(tmp_path),
        "AIRFLOW_ICEPROD_AIRFLOW_PASSWORD": "s3cret-admin-pw",
    }
    cli = str(BIN / "airflow-iceprod")
    with LocalIceProd(auto_approve_as="alice", device_interval=0.2, materialize_interval=None) as ip:
        args = ["--conn-id", "iceprod_rest", "--airflow-url", url, "--airflow-user", "admin"]
        login = subprocess.run(
            [cli, "login", *args, "--api-url", ip.api_url, "--oauth-url", ip.issuer_url, "--no-qr"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert login.returncode == 0, login.stderr
        assert "via the Airflow REST API" in login.stdout
        extra = _db_extra("iceprod_rest")
        assert extra is not None and ip.refresh_token_is_valid(extra["refresh_token"])
        assert extra["oauth_url"] == ip.issuer_url

        # a second login PATCHes the existing connection (masked extras keep their stored values)
        again = subprocess.run(
            [cli, "login", *args, "--no-qr"], env=env, capture_output=True, text=True, timeout=120
        )
        assert again.returncode == 0, again.stderr
        second = _db_extra("iceprod_rest")
        assert second["refresh_token"] != extra["refresh_token"] and ip.refresh_token_is_valid(
            second["refresh_token"]
        )
        assert second["oauth_url"] == ip.issuer_url

        logout = subprocess.run([cli, "logout", *args], env=env, capture_output=True, text=True, timeout=120)
        assert logout.returncode == 0, logout.stderr
        assert "refresh_token" not in (_db_extra("iceprod_rest") or {})

        bad = subprocess.run(
            [cli, "login", *args, "--no-qr"],
            env={**env, "AIRFLOW_ICEPROD_AIRFLOW_PASSWORD": "wrong"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert bad.returncode == 3 and "Could not log in to Airflow" in bad.stderr
        assert "wrong" not in bad.stderr
