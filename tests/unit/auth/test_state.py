"""The token-state overlay through the Task SDK, as tasks and triggers use it.

A task's Variable calls go to the Execution API. Here they go through Airflow's own in-process
supervisor comms (what ``dag.test()`` uses) into the migrated SQLite metadata DB, so the real
``GetVariable``/``PutVariable`` messages, routes, encryption and masking run.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from auth_helpers import FAST_RETRY, settings_for

from airflow_provider_iceprod.auth.cache import TokenCache
from airflow_provider_iceprod.auth.provider import TokenProvider
from airflow_provider_iceprod.auth.state import VariableTokenStateStore, variable_name
from airflow_provider_iceprod.auth.tokens import TokenState
from airflow_provider_iceprod.testing import LocalIceProd


@pytest.fixture(scope="module")
def task_comms(airflow_db: Path) -> Iterator[None]:
    """Make this process look like a task process (SUPERVISOR_COMMS set), talking to the DB in-process."""
    import psutil
    import structlog
    from airflow.sdk.execution_time.supervisor import (
        InProcessSupervisorComms,
        InProcessTestSupervisor,
        set_supervisor_comms,
    )

    supervisor = InProcessTestSupervisor(
        id=uuid.uuid4(),
        pid=os.getpid(),
        process=psutil.Process(),
        process_log=structlog.get_logger(logger_name="task").bind(),
        client=InProcessTestSupervisor._api_client(),
    )
    supervisor.comms = InProcessSupervisorComms(supervisor=supervisor)
    with set_supervisor_comms(supervisor.comms):
        yield


def _db_row(key: str) -> tuple[str, bool] | None:
    """The stored (raw, not decrypted) value of a Variable and whether it is encrypted."""
    from airflow.utils.session import create_session
    from sqlalchemy import text

    with create_session() as session:
        row = session.execute(
            text("SELECT val, is_encrypted FROM variable WHERE key = :k"), {"k": key}
        ).first()
        return None if row is None else (str(row[0]), bool(row[1]))


def test_variable_name_contains_token() -> None:
    assert "token" in variable_name("iceprod_default")
    assert variable_name("x") == "iceprod_token_state__x"


def test_outside_a_task_reads_see_no_overlay_and_writes_warn(caplog) -> None:
    store = VariableTokenStateStore("no_task_context")
    assert store.load() is None
    state = TokenState("secret-refresh-token-value", 1.0, "https://issuer", "client", "")
    with caplog.at_level(logging.WARNING):
        assert store.save(state) is False
    assert "could not be saved" in caplog.text
    assert "secret-refresh-token-value" not in caplog.text


def test_unreadable_overlay_counts_as_none() -> None:
    assert TokenState.from_json("not json") is None
    assert TokenState.from_json(json.dumps({"saved_at": 1})) is None
    assert TokenState.from_json(json.dumps({"refresh_token": "  "})) is None


def test_a_masked_shared_access_token_is_ignored_not_used() -> None:
    # Airflow's UI writes "***" back for masked values; the refresh token still counts
    state = TokenState.from_json(
        json.dumps({"refresh_token": "rt-1", "access_token": "***", "access_expires_at": 9e9})
    )
    assert state is not None and state.refresh_token == "rt-1"
    assert state.access_token == "" and state.shared_access(lead_time=120) is None
    # an overlay from before sharing has no access token and round-trips without one
    old = TokenState("rt-2", 1.0, "https://issuer", "client", "fp")
    assert "access_token" not in old.to_json()
    assert TokenState.from_json(old.to_json()) == old


def test_overlay_round_trip_through_the_execution_api(task_comms: None) -> None:
    store = VariableTokenStateStore("roundtrip")
    store.clear()
    assert store.load() is None
    state = TokenState(
        "refresh-token-value-123456",
        1234.5,
        "https://issuer/realm",
        "iceprod-public",
        "abc",
        access_token="access-token-value-654321",
        access_expires_at=2000.0,
        access_obtained_at=1700.0,
    )
    assert store.save(state) is True
    assert store.load() == state
    value, encrypted = _db_row(store.key) or ("", False)
    assert encrypted  # Fernet-encrypted at rest
    assert "refresh-token-value-123456" not in value and "access-token-value-654321" not in value


def test_clearing_the_overlay_deletes_its_variable(task_comms: None) -> None:
    store = VariableTokenStateStore("cleared")
    state = TokenState("refresh-token-cleared-123", 1.0, "https://issuer/realm", "iceprod-public", "")
    assert store.save(state) is True and store.load() == state
    store.clear()
    assert store.load() is None and _db_row(store.key) is None


async def test_async_overlay_round_trip(task_comms: None) -> None:
    store = VariableTokenStateStore("roundtrip_async")
    state = TokenState("refresh-token-async-987654", 99.0, "https://issuer/realm", "iceprod-public", "")
    assert await store.asave(state) is True
    assert await store.aload() == state


def test_rotation_in_a_task_persists_to_the_variable(task_comms: None) -> None:
    with LocalIceProd(rotate_refresh_tokens=True, materialize_interval=None) as ip:
        settings = settings_for(ip, ip.issue_refresh_token("alice"), conn_id="task_rotation")
        first = TokenProvider(settings, retry=FAST_RETRY)
        access = first.get_token()
        saved = VariableTokenStateStore("task_rotation").load()
        assert saved is not None and ip.refresh_token_is_valid(saved.refresh_token)
        assert saved.access_token == access  # shared with the next task processes
        # a later task (fresh process cache) with the same, now spent, connection token takes it over
        later = TokenProvider(settings, retry=FAST_RETRY, cache=TokenCache())
        assert later.get_token() == access
        assert ip.counters.grant_requests["refresh_token"] == 1
        # and refreshes with the overlay's refresh token once it must (no invalid_grant first)
        later.get_token(force_refresh=True)
        assert ip.counters.grant_requests["refresh_token"] == 2
        newer = VariableTokenStateStore("task_rotation").load()
        assert newer is not None and newer.generation == saved.generation + 1
