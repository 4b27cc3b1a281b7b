"""The token-state overlay in every context: metadata DB, owner-only file, layered, and the provider's
choices between overlay and connection. Real stand-in issuer with single-use refresh tokens, real DB.
"""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from auth_helpers import FAST_RETRY, settings_for

from airflow_provider_iceprod.auth.cache import TokenCache
from airflow_provider_iceprod.auth.keepalive import keep_alive
from airflow_provider_iceprod.auth.provider import TokenProvider
from airflow_provider_iceprod.auth.state import (
    MemoryTokenStateStore,
    VariableTokenStateStore,
    default_state_store,
)
from airflow_provider_iceprod.auth.state_stores import (
    DbTokenStateStore,
    FileTokenStateStore,
    LayeredTokenStateStore,
)
from airflow_provider_iceprod.auth.tokens import TokenState, fingerprint
from airflow_provider_iceprod.exceptions import IceProdAuthError, IceProdTransientError
from airflow_provider_iceprod.testing import LocalIceProd

ISSUER, CLIENT = "https://issuer.example/realms/x", "iceprod-public"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This test's own state dir and no process context (caches and locks: ``conftest.py``)."""
    monkeypatch.setenv("AIRFLOW_ICEPROD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("_AIRFLOW_PROCESS_CONTEXT", raising=False)


@pytest.fixture
def ip() -> Iterator[LocalIceProd]:
    with LocalIceProd(rotate_refresh_tokens=True, materialize_interval=None) as server:
        yield server


def state(token: str, generation: int, base: str = "base", base_saved_at: float = 0.0) -> TokenState:
    return TokenState(token, 1.0, ISSUER, CLIENT, fingerprint(base), generation, base_saved_at)


# -- TokenState ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "***",
        "",
        json.dumps({"refresh_token": "***", "saved_at": "***"}),
        json.dumps({"refresh_token": "***"}),
    ],
)
def test_values_that_are_not_tokens_are_ignored_with_a_warning(raw: str, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        assert TokenState.from_json(raw) is None
    assert "Ignoring" in caplog.text


def test_the_overlay_never_goes_backwards() -> None:
    newer, older = state("t2", 2), state("t1", 1)
    assert newer.supersedes(older) and not older.supersedes(newer)
    assert not state("t2b", 2).supersedes(newer)  # equal generation: keep what is stored
    relogin = state("u1", 1, base="new login", base_saved_at=10.0)
    assert relogin.supersedes(state("t9", 9, base_saved_at=5.0))  # a newer login wins
    assert not state("t9", 9, base_saved_at=5.0).supersedes(relogin)


# -- stores -------------------------------------------------------------------------------------


def test_db_store_round_trip_and_never_backwards(airflow_db: Path) -> None:
    store = DbTokenStateStore("iceprod_db_store")
    store.clear()
    assert store.load() is None
    assert store.save(state("token-gen-2-abcdef", 2))
    assert store.save(state("token-gen-1-abcdef", 1))  # accepted, but does not overwrite
    loaded = store.load()
    assert loaded is not None and loaded.refresh_token == "token-gen-2-abcdef"


def test_db_store_read_failure_is_transient(airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow.utils.session as session_module
    from sqlalchemy.exc import OperationalError

    def broken():  # the metadata DB drops the connection
        raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(session_module, "create_session", broken)
    with pytest.raises(IceProdTransientError, match="Could not read the IceProd token-state overlay"):
        DbTokenStateStore("iceprod_db_down").load()


def test_file_store_is_owner_only_and_never_backwards(tmp_path: Path) -> None:
    store = FileTokenStateStore.for_connection("iceprod_file", ISSUER, CLIENT)
    assert store is not None
    assert store.save(state("file-token-gen-3", 3))
    assert store.save(state("file-token-gen-2", 2))
    assert store.load().refresh_token == "file-token-gen-3"
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert "file-token" not in store.path.name


def test_a_file_that_is_not_utf8_is_ignored_with_a_warning_and_rewritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = FileTokenStateStore.for_connection("iceprod_garbled", ISSUER, CLIENT)
    assert store is not None
    store.path.parent.mkdir(parents=True, exist_ok=True)
    store.path.write_bytes(b'{"refresh_token": "\xff\xfe broken"}')
    with caplog.at_level("WARNING"):
        assert store.load() is None  # not a UnicodeDecodeError out of a refresh
    assert "not valid JSON" in caplog.text and str(store.path) in caplog.text
    assert store.save(state("file-token-gen-1", 1))  # the next refresh rewrites it
    assert store.load().refresh_token == "file-token-gen-1"


def test_file_store_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_ICEPROD_STATE_DIR", "off")
    assert FileTokenStateStore.for_connection("c", ISSUER, CLIENT) is None


def test_the_store_follows_the_process_context(airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = default_state_store("c", ISSUER, CLIENT)
    assert isinstance(plain, FileTokenStateStore)  # a plain script: this host's file only
    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")
    server = default_state_store("c", ISSUER, CLIENT)
    assert isinstance(server, LayeredTokenStateStore) and isinstance(server.shared, DbTokenStateStore)


def test_task_sdk_read_failure_is_transient_not_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    """An Execution API hiccup while reading the overlay must not make the hook use a spent token."""
    from airflow.sdk.execution_time import task_runner

    class HiccupComms:
        def send(self, msg):
            raise ConnectionError("api-server restarting")

    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", HiccupComms(), raising=False)
    with pytest.raises(IceProdTransientError):
        VariableTokenStateStore("iceprod_hiccup").load()


# -- provider choices ---------------------------------------------------------------------------


def test_a_failed_overlay_read_sends_no_grant(ip: LocalIceProd, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.execution_time import task_runner

    class HiccupComms:
        def send(self, msg):
            raise ConnectionError("api-server restarting")

    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", HiccupComms(), raising=False)
    base = ip.issue_refresh_token("alice")
    p = TokenProvider(
        settings_for(ip, base), retry=FAST_RETRY, state_store=VariableTokenStateStore("iceprod_hiccup")
    )
    with pytest.raises(IceProdTransientError):
        p.get_token()
    assert ip.counters.grant_requests["refresh_token"] == 0
    assert ip.refresh_token_is_valid(base)


def test_the_overlay_is_preferred_when_it_descends_from_the_login_whatever_the_clocks(
    ip: LocalIceProd,
) -> None:
    # A worker whose clock is behind wrote the overlay: its saved_at is older than the login's.
    base = ip.issue_refresh_token("alice")
    first = TokenProvider(settings_for(ip, base), retry=FAST_RETRY, state_store=MemoryTokenStateStore())
    first.get_token()
    rotated = first.state_store.load()
    skewed = TokenState(
        rotated.refresh_token, 1.0, rotated.issuer, rotated.client_id, rotated.fingerprint_of_base, 1
    )
    ip.reset_counters()
    later = TokenProvider(
        settings_for(ip, base, refresh_token_saved_at=2_000_000_000.0),
        retry=FAST_RETRY,
        state_store=MemoryTokenStateStore(skewed),
        cache=TokenCache(),
    )
    later.get_token()
    assert later.status().refresh_source == "overlay"
    assert ip.counters.grant_requests["refresh_token"] == 1  # no invalid_grant round first


def test_after_invalid_grant_a_new_login_in_the_connection_is_picked_up(ip: LocalIceProd) -> None:
    """A long-running triggerer keeps the old session; someone runs `airflow-iceprod login`."""
    old = ip.issue_refresh_token("alice")
    p = TokenProvider(settings_for(ip, old), retry=FAST_RETRY, state_store=MemoryTokenStateStore())
    p.get_token()
    new_login = ip.issue_refresh_token("alice")
    connection = {"now": settings_for(ip, new_login)}
    p._reload = lambda: connection["now"]
    ip.revoke_all("alice")  # the old session ends (idle timeout, revocation) ...
    new_login = ip.issue_refresh_token("alice")  # ... and the login created a new one
    connection["now"] = settings_for(ip, new_login)
    p.invalidate()  # IceProd rejected the old session's access token
    p.get_token()
    assert p.settings.refresh_token == new_login
    assert p.status().username == "alice"


def test_keep_alive_fails_loudly_when_the_rotated_token_could_not_be_saved(ip: LocalIceProd) -> None:
    # Outside a task, the Task SDK store cannot write: the rotated token lives in memory only.
    p = TokenProvider(
        settings_for(ip, ip.issue_refresh_token("alice")),
        retry=FAST_RETRY,
        state_store=VariableTokenStateStore("iceprod_unsaved"),
    )
    with pytest.raises(IceProdAuthError, match="could not be saved"):
        keep_alive(p)
