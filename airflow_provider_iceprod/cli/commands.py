"""The subcommands ``status``, ``refresh`` and ``logout`` (``login`` is in :mod:`.login`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from airflow_provider_iceprod.cli.common import EXIT_OK, CliError, cli_retry
from airflow_provider_iceprod.cli.output import ago, span, when
from airflow_provider_iceprod.cli.stores import (
    AirflowRestApi,
    MetadataDb,
    airflow_store,
    read_connection,
)
from airflow_provider_iceprod.cli.token_state import CliTokenStateStore

if TYPE_CHECKING:
    from airflow_provider_iceprod.auth.status import TokenStatus


def _provider_for(args: argparse.Namespace) -> tuple[Any, CliTokenStateStore]:
    """The token machinery of the connection, as every other process uses it (overlay in the DB).

    Both ``status`` and ``refresh`` may refresh: with rotating refresh tokens that writes the overlay.
    """
    from airflow_provider_iceprod.auth.provider import TokenProvider

    db = MetadataDb()
    conn = read_connection(args.conn_id, db)
    settings = conn.settings()
    store = CliTokenStateStore(conn)
    provider = TokenProvider(
        settings,
        retry=cli_retry(),
        state_store=store if settings.refresh_token else None,
        reload=lambda: read_connection(args.conn_id, db).settings(),
    )
    return provider, store


def _status_lines(status: TokenStatus, store: CliTokenStateStore, api_url: str) -> list[tuple[str, str]]:
    now = time.time()
    sources = {
        "connection": f"the connection ({store.conn.origin})",
        "overlay": f"the token-state overlay (Variable {store.key})",
        "memory": "this process",
    }
    lines = [
        ("Connection", f"{status.conn_id} ({store.conn.origin})"),
        ("IceProd API", api_url),
        ("Issuer", f"{status.issuer} (client {status.client_id})"),
        (
            "Credential",
            {"refresh_token": "refresh token (device login)"}.get(status.credential, status.credential),
        ),
        ("Logged in as", status.username or "unknown"),
        ("Groups", ", ".join(status.groups) or "none"),
    ]
    if status.access_expires_at is not None:
        left = status.access_expires_at - now
        lines.append(("Access token", f"valid until {when(status.access_expires_at)} ({span(left)} left)"))
    if status.credential == "refresh_token":
        used = sources.get(status.refresh_source, status.refresh_source)
        text = f"used the one from {used}"
        if store.last_saved_to:
            text += f"; the issuer rotated it, the new one is saved in {store.last_saved_to}"
        lines.append(("Refresh token", text))
        lines.append(("Login", ago(now - status.login_at) if status.login_at else "unknown"))
    lines.append(("Last refresh", ago(now - status.last_refresh_at if status.last_refresh_at else None)))
    return lines


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    provider, store = _provider_for(args)
    status = provider.status()
    if args.json:
        doc = {k: v for k, v in status.__dict__.items()}
        doc["groups"] = list(status.groups)
        doc["connection_origin"] = store.conn.origin
        print(json.dumps(doc, indent=2), file=out)
        return EXIT_OK
    for label, value in _status_lines(status, store, provider.settings.api_url):
        print(f"{label + ':':<15}{value}", file=out)
    return EXIT_OK


def cmd_refresh(args: argparse.Namespace, out: TextIO) -> int:
    provider, store = _provider_for(args)
    provider.get_token(force_refresh=True)
    status = provider.status()
    left = (status.access_expires_at or time.time()) - time.time()
    print(
        f"Refreshed: {status.username or 'unknown user'} has an access token valid for {span(left)}.",
        file=out,
    )
    if store.last_saved_to:
        print(f"The issuer rotated the refresh token; saved the new one in {store.last_saved_to}.", file=out)
    return EXIT_OK


def cmd_logout(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_provider_iceprod.auth.oidc import OIDCClient
    from airflow_provider_iceprod.auth.state import variable_name
    from airflow_provider_iceprod.auth.tokens import TokenState

    store = airflow_store(args)
    store.check()
    conn = store.get(args.conn_id)
    if conn is None:
        raise CliError(f"No connection {args.conn_id!r} in the {store.name}; nothing to log out.")
    settings = conn.settings()
    key = variable_name(args.conn_id)
    tokens = [settings.refresh_token] if settings.refresh_token and settings.refresh_token != "***" else []
    overlay = TokenState.from_json(store.get_variable(key))
    if overlay is not None and overlay.refresh_token not in tokens:
        tokens.append(overlay.refresh_token)
    oidc = OIDCClient(settings.oauth_url, settings.client_id, retry=cli_retry(), conn_id=args.conn_id)
    revoked = 0
    for token in tokens:
        try:
            if oidc.revoke(token):
                revoked += 1
            else:
                print(
                    f"{settings.oauth_url} offers no token revocation; the session ends when it idles out.",
                    file=out,
                )
                break
        except Exception as exc:  # keep going: removing the token locally matters most
            print(f"Warning: could not revoke a refresh token at the issuer: {exc}", file=sys.stderr)
    if not tokens and isinstance(store, AirflowRestApi):
        print("The REST API does not reveal the stored token, so it was not revoked at the issuer.", file=out)
    conn.extra.pop("refresh_token", None)
    conn.extra.pop("refresh_token_saved_at", None)
    store.put(conn)
    store.delete_variable(key)
    print(
        f"Logged out: removed the refresh token from connection {args.conn_id!r} and Variable {key} "
        f"({revoked} token(s) revoked at the issuer).",
        file=out,
    )
    return EXIT_OK
