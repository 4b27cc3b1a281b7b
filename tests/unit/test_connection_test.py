"""The connection test (Airflow's Test button): fast, names the URL, never names Airflow's temporary id."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from airflow_provider_iceprod.connection_test import TEST_DEADLINE, is_temporary_conn_id
from airflow_provider_iceprod.hooks.iceprod import IceProdHook
from airflow_provider_iceprod.testing import LocalIceProd

TEMP_ID = "hr1EswVM"  # the shape of Airflow's get_random_string(): 8 letters and digits


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A 127.0.0.1 port that accepts connections and never answers (an unreachable service)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(50)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def _set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, fields: dict) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


def test_logged_in_connection_reports_the_user(iceprod_server: LocalIceProd, monkeypatch) -> None:
    _set_conn(monkeypatch, TEMP_ID, json.loads(iceprod_server.airflow_connection_json()))
    ok, message = IceProdHook(TEMP_ID).test_connection()
    assert ok, message
    assert message.startswith("Authenticated as alice (")


def test_temporary_id_is_never_named(iceprod_server: LocalIceProd, monkeypatch) -> None:
    fields = json.loads(iceprod_server.airflow_connection_json())
    del fields["extra"]["refresh_token"]
    _set_conn(monkeypatch, TEMP_ID, fields)
    assert is_temporary_conn_id(TEMP_ID)
    ok, message = IceProdHook(TEMP_ID).test_connection()
    assert not ok
    assert TEMP_ID not in message and TEMP_ID.upper() not in message
    assert "airflow-iceprod login --conn-id <this connection's id>" in message


def test_real_id_is_named(iceprod_server: LocalIceProd, monkeypatch) -> None:
    fields = json.loads(iceprod_server.airflow_connection_json())
    del fields["extra"]["refresh_token"]
    _set_conn(monkeypatch, "iceprod_science", fields)
    assert not is_temporary_conn_id("iceprod_science")
    ok, message = IceProdHook("iceprod_science").test_connection()
    assert not ok
    assert "airflow-iceprod login --conn-id iceprod_science" in message


def test_unreachable_api_fails_fast_and_names_the_url(
    iceprod_server: LocalIceProd, black_hole: str, monkeypatch
) -> None:
    fields = json.loads(iceprod_server.airflow_connection_json())
    fields["host"] = black_hole
    _set_conn(monkeypatch, TEMP_ID, fields)
    hook = IceProdHook(TEMP_ID)
    started = time.monotonic()
    ok, message = hook.test_connection()
    elapsed = time.monotonic() - started
    assert not ok
    assert f"GET {black_hole}/datasets" in message
    assert elapsed < TEST_DEADLINE, elapsed
    # Only the test is short-fused: the hook that tasks use keeps its retry policy.
    assert hook.retry_settings.retry_limit == 5
    assert hook.retry_settings.timeout == 30.0


def test_refused_issuer_names_the_discovery_url(iceprod_server: LocalIceProd, monkeypatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}/auth"
    fields = json.loads(iceprod_server.airflow_connection_json())
    fields["extra"]["oauth_url"] = closed
    _set_conn(monkeypatch, TEMP_ID, fields)
    ok, message = IceProdHook(TEMP_ID).test_connection()
    assert not ok
    assert f"{closed}/.well-known/openid-configuration" in message
    assert "gave up after" not in message  # one attempt, no retries
