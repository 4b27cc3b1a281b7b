"""``airflow-iceprod login --from-file`` (a refresh token saved by rest-tools' SavedDeviceGrantAuth) and
the warning about secrets on the command line. In-process ``main()``, real DB, stand-in issuer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_iceprod.cli import EXIT_AUTH, EXIT_CONFIG, EXIT_OK, main
from airflow_provider_iceprod.testing import LocalIceProd


@pytest.fixture
def ip() -> Iterator[LocalIceProd]:
    with LocalIceProd(rotate_refresh_tokens=True, materialize_interval=None) as server:
        yield server


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _stored(conn_id: str) -> dict[str, Any]:
    from airflow.models import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        conn = session.scalar(select(Connection).where(Connection.conn_id == conn_id))
        return dict(conn.extra_dejson) if conn else {}


def _saved_by_rest_tools(ip: LocalIceProd, path: Path) -> str:
    """What ``SavedDeviceGrantAuth``'s update_func writes: the bare refresh token (``write_text``)."""
    token = ip.issue_refresh_token("alice")
    path.write_text(token)
    return token


def test_from_file_imports_the_rest_tools_token_without_printing_it(
    env: dict[str, str], ip: LocalIceProd, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = _saved_by_rest_tools(ip, tmp_path / ".iceprod-auth")
    conn_id = "iceprod_from_file"
    args = ["login", "--conn-id", conn_id, "--api-url", ip.api_url, "--oauth-url", ip.issuer_url]
    code, text = run([*args, "--from-file", str(tmp_path / ".iceprod-auth")], capsys)
    assert code == EXIT_OK, text
    assert "Logged in as alice" in text and "rotated" in text
    stored = _stored(conn_id)["refresh_token"]
    assert ip.refresh_token_is_valid(stored)  # the rotated token, checked by the one refresh
    assert ip.counters.grant_requests["refresh_token"] == 1
    for secret in (saved, stored):
        assert secret not in text
    from airflow_provider_iceprod.hooks.iceprod import IceProdHook

    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")  # a script reading the DB connection
    ok, message = IceProdHook(conn_id).test_connection()
    assert ok, message


@pytest.mark.parametrize("content", ["", "***", "two words\n"])
def test_from_file_rejects_what_is_not_a_token_before_any_side_effect(
    env: dict[str, str], ip: LocalIceProd, tmp_path: Path, capsys, content: str
) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    code, text = run(
        ["login", "--conn-id", "iceprod_bad_file", "--api-url", ip.api_url, "--from-file", str(path)], capsys
    )
    assert code == EXIT_CONFIG and "does not hold a refresh token" in text
    assert _stored("iceprod_bad_file") == {}
    assert ip.counters.grant_requests["refresh_token"] == 0


def test_from_file_with_a_spent_token_fails_as_authentication(
    env: dict[str, str], ip: LocalIceProd, tmp_path: Path, capsys
) -> None:
    token = _saved_by_rest_tools(ip, tmp_path / "spent")
    ip.revoke_refresh_token(token)
    args = ["login", "--conn-id", "iceprod_spent", "--api-url", ip.api_url, "--oauth-url", ip.issuer_url]
    code, text = run([*args, "--from-file", str(tmp_path / "spent")], capsys)
    assert code == EXIT_AUTH and "invalid_grant" in text and token not in text


def test_from_file_from_another_issuer_is_refused(
    env: dict[str, str], ip: LocalIceProd, tmp_path: Path, capsys
) -> None:
    _saved_by_rest_tools(ip, tmp_path / "other")
    args = [
        "login",
        "--conn-id",
        "iceprod_other",
        "--api-url",
        ip.api_url,
        "--oauth-url",
        "https://keycloak.example/realms/x",
    ]
    code, text = run([*args, "--from-file", str(tmp_path / "other")], capsys)
    assert code == EXIT_CONFIG and ip.issuer_url in text
    assert ip.counters.grant_requests["refresh_token"] == 0


def test_secrets_on_the_command_line_are_warned_about(env: dict[str, str], capsys) -> None:
    _, text = run(
        [
            "logout",
            "--conn-id",
            "x",
            "--airflow-url",
            "http://127.0.0.1:9",
            "--airflow-user",
            "u",
            "--airflow-password",
            "pw",
        ],
        capsys,
    )
    assert "--airflow-password is visible to other users" in text
    assert "$AIRFLOW_ICEPROD_AIRFLOW_PASSWORD" in text
    _, text = run(
        ["logout", "--conn-id", "x", "--airflow-url", "http://127.0.0.1:9", "--airflow-token", "t"], capsys
    )
    assert "--airflow-token is visible" in text and "$AIRFLOW_ICEPROD_AIRFLOW_TOKEN" in text


def test_a_new_api_url_replaces_the_stored_port() -> None:
    """A second login with another --api-url must not trip over the port the first one stored."""
    import argparse

    from airflow_provider_iceprod.cli.login import _login_connection
    from airflow_provider_iceprod.cli.stores import StoredConnection

    old = StoredConnection(conn_id="c", host="http://127.0.0.1:1111", port=1111, extra={})
    args = argparse.Namespace(
        conn_id="c",
        api_url="http://127.0.0.1:2222",
        oauth_url="http://127.0.0.1:2222/auth/realms/IceCube",
        client_id=None,
        actions_url=None,
        website_url=None,
    )
    conn = _login_connection(args, old)
    assert (conn.host, conn.port) == ("http://127.0.0.1:2222", 2222)
