"""The connection test behind Airflow's Test button and ``airflow connections test``.

Three things set it apart from a task's calls:

* it must answer within :data:`TEST_DEADLINE` seconds even when a host does not answer, so it sends
  each request once with a short timeout (tasks keep the hook's normal retry policy);
* Airflow's api-server tests a copy of the connection under a temporary random id (8 letters and
  digits, exported as ``AIRFLOW_CONN_<ID>``), so messages must not name that id or suggest a login
  command for it;
* every failure names the URL that failed;
* the temporary id has no token state of its own: with single-use refresh tokens the stored login may
  have rotated long ago, so the test uses (and updates) the token state of the stored connection it
  is a copy of (found in the metadata DB by its refresh token; the api-server is a server process).
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from airflow_provider_iceprod.exceptions import IceProdError

if TYPE_CHECKING:
    from airflow_provider_iceprod.hooks.iceprod import IceProdHook

#: Seconds per request during the test (one attempt each; the test makes at most three requests
#: before the first failure ends it, and an unreachable host fails the first one).
TEST_TIMEOUT = 4.0
#: What the test promises: an answer within this many seconds.
TEST_DEADLINE = 10.0

_TRANSIENT_ID = re.compile(r"^[A-Za-z0-9]{8}$")


def is_temporary_conn_id(conn_id: str) -> bool:
    """True for the random id Airflow's api-server gives the copy of a connection it tests."""
    return bool(_TRANSIENT_ID.match(conn_id)) and f"AIRFLOW_CONN_{conn_id.upper()}" in os.environ


def _without_temporary_id(message: str, conn_id: str) -> str:
    message = message.replace(f"IceProd connection {conn_id!r}", "This IceProd connection")
    message = message.replace(f"--conn-id {conn_id}", "--conn-id <this connection's id>")
    message = message.replace(f"iceprod_token_state__{conn_id}", "iceprod_token_state__<connection id>")
    return message.replace(repr(conn_id), "this connection").replace(conn_id, "<connection id>")


def _with_url(exc: BaseException, api_url: str) -> str:
    """The message, with the failed request's full URL where it names only the path."""
    message = str(exc) or type(exc).__name__
    if not isinstance(exc, IceProdError) or not exc.path or "://" in message:
        return message
    request = f"{exc.method} {exc.path}"
    if request in message:
        return message.replace(request, f"{exc.method} {api_url}{exc.path}", 1)
    return f"{api_url}{exc.path}: {message}"


def saved_connection_id(refresh_token: str, temporary_id: str) -> str | None:
    """The stored ``iceprod`` connection with this login (refresh token), or None (not in the DB)."""
    from airflow.models import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        for conn in session.scalars(select(Connection).where(Connection.conn_type == "iceprod")):
            try:
                extra = conn.extra_dejson
            except Exception:  # a broken extra is not the one under test
                continue
            if conn.conn_id != temporary_id and extra.get("refresh_token") == refresh_token:
                return str(conn.conn_id)
    return None


def _share_the_saved_connections_tokens(probe: IceProdHook) -> None:
    """Point a temporary copy's token state at the stored connection's (see the module docstring)."""
    from airflow_provider_iceprod.auth.state import default_state_store, in_server_context

    settings = probe.settings
    if settings.credential_kind != "refresh_token" or not settings.refresh_token or not in_server_context():
        return
    try:
        saved = saved_connection_id(settings.refresh_token, settings.conn_id)
    except Exception:  # no DB here after all: test with the copy alone
        return
    if saved is not None:
        probe.token_provider.state_store = default_state_store(saved, settings.oauth_url, settings.client_id)


def run_connection_test(hook: IceProdHook) -> tuple[bool, str]:
    """``(True, "Authenticated as <user> (<groups>)")`` or ``(False, why, naming the URL)``."""
    from airflow_provider_iceprod.api import flows
    from airflow_provider_iceprod.hooks.iceprod import IceProdHook

    conn_id = hook.iceprod_conn_id
    probe = IceProdHook(conn_id, retry_limit=0, timeout=TEST_TIMEOUT)
    api_url = "the IceProd API"
    try:
        api_url = probe.settings.api_url
        if is_temporary_conn_id(conn_id):
            _share_the_saved_connections_tokens(probe)
        return True, probe._run(flows.connection_check)
    except Exception as exc:
        message = _with_url(exc, api_url)
        if is_temporary_conn_id(conn_id):
            message = _without_temporary_id(message, conn_id)
        return False, message
