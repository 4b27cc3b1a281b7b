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


def test_test_button_on_a_rotated_login_uses_the_stored_connections_token_state(
    airflow_db, monkeypatch, tmp_path
) -> None:
    """Single-use refresh tokens: tasks rotated the login long ago, then someone presses Test.

    Airflow tests a copy under a temporary id; the copy holds the stored (spent) login token. The test
    must use the stored connection's token state, and the login must keep working afterwards.
    """
    from airflow.models import Connection, Variable
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    from airflow_provider_iceprod.auth.cache import TOKEN_CACHE
    from airflow_provider_iceprod.auth.state import variable_name
    from airflow_provider_iceprod.auth.state_stores import DbTokenStateStore

    conn_id = "iceprod_rotated"
    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")  # the api-server and the CLI are
    with LocalIceProd(rotate_refresh_tokens=True, materialize_interval=None) as ip:
        login = ip.issue_refresh_token("alice")
        extra = json.dumps(ip.connection_extra(login))
        with create_session() as session:
            session.execute(delete(Connection).where(Connection.conn_id == conn_id))
            session.execute(delete(Variable).where(Variable.key == variable_name(conn_id)))
        with create_session() as session:
            session.add(Connection(conn_id=conn_id, conn_type="iceprod", host=ip.api_url, extra=extra))

        def new_host() -> None:  # nothing in memory, no file copy: only what the DB holds
            TOKEN_CACHE.clear()
            monkeypatch.setenv("AIRFLOW_ICEPROD_STATE_DIR", str(tmp_path / f"state-{time.monotonic()}"))

        new_host()
        IceProdHook(conn_id).whoami()  # a task rotates the login token: the stored one is spent now
        rotated = DbTokenStateStore(conn_id).load()
        assert rotated is not None and not ip.refresh_token_is_valid(login)

        new_host()
        copy = {"conn_type": "iceprod", "host": ip.api_url, "extra": json.loads(extra)}
        _set_conn(monkeypatch, TEMP_ID, copy)  # what the api-server does with the stored connection
        ok, message = IceProdHook(TEMP_ID).test_connection()
        assert ok, message
        # nothing was stored under the temporary id, and the login still works for the next task
        assert DbTokenStateStore(TEMP_ID).load() is None
        new_host()
        assert IceProdHook(conn_id).whoami().username == "alice"
