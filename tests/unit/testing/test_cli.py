"""``airflow-iceprod local-server`` (``airflow_provider_iceprod.testing.cli``) in a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from standin_helpers import wait_for


def test_local_server_prints_json_serves_and_stops_on_sigint(tmp_path: Path) -> None:
    info_file = tmp_path / "iceprod.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_iceprod.testing.cli",
            "--write-json",
            str(info_file),
            "--auto-approve-as",
            "alice",
            "--issue-token",
            "bob",
            "--grid-tick",
            "0.05",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        printed = json.loads(line)
        wait_for(lambda: info_file.exists() and info_file.read_text().strip(), timeout=20)
        assert json.loads(info_file.read_text()) == printed
        assert stat.S_IMODE(info_file.stat().st_mode) == 0o600  # holds the service secret
        assert printed["issuer_url"] == printed["api_url"] + "/auth/realms/IceCube"
        assert printed["public_client_id"] == "iceprod-public"
        assert requests.get(printed["api_url"] + "/healthz", timeout=5).json() == {}
        conn = json.loads(printed["airflow_connection"])
        assert conn["extra"]["refresh_token"] == printed["refresh_token"]
        form = {
            "grant_type": "refresh_token",
            "refresh_token": printed["refresh_token"],
            "client_id": "iceprod-public",
        }
        token = requests.post(f"{printed['issuer_url']}/protocol/openid-connect/token", data=form, timeout=5)
        access = token.json()["access_token"]
        resp = requests.get(
            printed["api_url"] + "/datasets", headers={"Authorization": f"Bearer {access}"}, timeout=5
        )
        assert resp.status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(printed["api_url"] + "/healthz", timeout=2)


def test_local_server_rejects_unknown_user() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_iceprod.testing.cli", "--auto-approve-as", "mallory"],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
    )
    assert result.returncode == 2
    assert "unknown user 'mallory'" in result.stderr


def test_write_json_makes_an_existing_world_readable_file_private(tmp_path: Path) -> None:
    """Issue 13 #8: the file holds the service client's secret; an existing 0644 file became 0600."""
    info_file = tmp_path / "iceprod.json"
    info_file.write_text("old\n")
    info_file.chmod(0o644)
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_iceprod.testing.cli", "--write-json", str(info_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        printed = json.loads(proc.stdout.readline() if proc.stdout else "")
        wait_for(lambda: info_file.read_text().strip() not in ("", "old"), timeout=20)
        assert json.loads(info_file.read_text()) == printed
        assert stat.S_IMODE(info_file.stat().st_mode) == 0o600
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
