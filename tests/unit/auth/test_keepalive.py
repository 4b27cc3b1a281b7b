"""The keep-alive check and its example DAG."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from auth_helpers import FAST_RETRY, settings_for

from airflow_provider_iceprod.auth.keepalive import keep_alive
from airflow_provider_iceprod.auth.provider import TokenProvider
from airflow_provider_iceprod.auth.state import MemoryTokenStateStore
from airflow_provider_iceprod.exceptions import IceProdAuthError
from airflow_provider_iceprod.testing import LocalIceProd

DAG_FILE = Path(__file__).resolve().parents[3] / "example_dags" / "iceprod_token_keepalive.py"


def _provider(ip: LocalIceProd, token: str, saved_at: float | None = None) -> TokenProvider:
    extra = {} if saved_at is None else {"refresh_token_saved_at": saved_at}
    return TokenProvider(
        settings_for(ip, token, **extra), retry=FAST_RETRY, state_store=MemoryTokenStateStore()
    )


def test_keep_alive_refreshes_and_reports_without_secrets(idp: LocalIceProd) -> None:
    token = idp.issue_refresh_token("alice")
    provider = _provider(idp, token, saved_at=time.time() - 3 * 86400)
    provider.get_token()
    summary = keep_alive(provider, max_login_age_days=30)
    assert idp.counters.grants["refresh_token"] == 2  # the forced refresh really happened
    assert summary["username"] == "alice" and summary["credential"] == "refresh_token"
    assert 2.9 < summary["login_age_days"] < 3.1
    text = json.dumps(summary)
    assert token not in text and provider.get_token() not in text


def test_keep_alive_fails_naming_login_when_the_login_is_too_old(idp: LocalIceProd) -> None:
    provider = _provider(idp, idp.issue_refresh_token("alice"), saved_at=time.time() - 200 * 86400)
    with pytest.raises(IceProdAuthError) as info:
        keep_alive(provider, max_login_age_days=180)
    assert "200.0 days old" in str(info.value)
    assert "airflow-iceprod login --conn-id iceprod_test" in str(info.value)


def test_keep_alive_age_check_can_be_disabled(idp: LocalIceProd) -> None:
    provider = _provider(idp, idp.issue_refresh_token("alice"), saved_at=time.time() - 999 * 86400)
    assert keep_alive(provider, max_login_age_days=0)["username"] == "alice"


def test_keep_alive_fails_loudly_when_the_token_is_dead(idp: LocalIceProd) -> None:
    token = idp.issue_refresh_token("alice")
    idp.revoke_refresh_token(token)
    with pytest.raises(IceProdAuthError) as info:
        keep_alive(_provider(idp, token, saved_at=time.time()), max_login_age_days=180)
    assert "airflow-iceprod login --conn-id iceprod_test" in str(info.value)


def test_keepalive_dag_parses_without_io_and_has_the_maintenance_settings(
    airflow_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from airflow.dag_processing.dagbag import DagBag

    def no_network(*args: object, **kwargs: object) -> None:
        raise RuntimeError("network I/O while parsing the DAG file")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    bag = DagBag(str(DAG_FILE))
    monkeypatch.undo()
    assert not bag.import_errors
    dag = bag.get_dag("iceprod_token_keepalive")
    assert dag is not None
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.schedule == "@daily"
    assert set(dag.params.keys()) == {"conn_id", "max_login_age_days"}
    assert all(task.retries == 0 for task in dag.tasks)


def test_keepalive_dag_file_imports_nothing_heavy_at_top_level() -> None:
    import ast

    tree = ast.parse(DAG_FILE.read_text())
    top_imports = [
        node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
    ]
    assert not [m for m in top_imports if m and m.startswith("airflow_provider_iceprod")], top_imports
