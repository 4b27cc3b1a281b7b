"""``airflow-iceprod login``: the device grant, or ``--from-file`` (a token saved by rest-tools)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from airflow_provider_iceprod.cli.common import CONN_TYPE, EXIT_OK, CliError, cli_retry
from airflow_provider_iceprod.cli.output import Countdown, show_device_code
from airflow_provider_iceprod.cli.stores import StoredConnection, airflow_store

if TYPE_CHECKING:
    from airflow_provider_iceprod.auth.oidc import OIDCClient
    from airflow_provider_iceprod.auth.tokens import GrantResult
    from airflow_provider_iceprod.settings import ConnectionSettings


def _login_connection(args: argparse.Namespace, existing: StoredConnection | None) -> StoredConnection:
    """The connection to write: existing fields, overridden by the command line, validated."""
    conn = existing or StoredConnection(conn_id=args.conn_id)
    conn.extra = dict(conn.extra)
    if args.api_url:
        conn.host = args.api_url
        conn.port = None  # the new URL names its port; the Port field is rewritten from it below
    overrides = {
        "oauth_url": args.oauth_url,
        "client_id": args.client_id,
        "actions_url": args.actions_url,
        "website_url": args.website_url,
    }
    for key, value in overrides.items():
        if value:
            conn.extra[key] = value
    conn.conn_type = CONN_TYPE
    settings = conn.settings()  # validates every URL before any side effect
    conn.host = settings.api_url
    conn.port = settings.api_port
    conn.extra["oauth_url"] = settings.oauth_url
    conn.extra["client_id"] = settings.client_id
    # Airflow's edit form shows only the extras the connection holds: keep every form field there.
    for key in ("actions_url", "website_url"):
        conn.extra.setdefault(key, None)
    return conn


def read_token_file(path: str) -> str:
    """The refresh token in a file written by rest-tools' ``SavedDeviceGrantAuth`` (the bare token text,
    e.g. IceProd's ``.iceprod-auth``). Errors never include the file's content.
    """
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"--from-file: cannot read {path} ({type(exc).__name__}: {exc.strerror}).") from None
    except UnicodeDecodeError:
        raise CliError(f"--from-file: {path} is not a text file with a refresh token.") from None
    token = text.strip()
    if not token or token == "***" or len(token.split()) != 1:
        raise CliError(
            f"--from-file: {path} does not hold a refresh token (rest-tools' SavedDeviceGrantAuth "
            "writes the bare token, nothing else)."
        )
    return token


def _check_issuer(token: str, settings: ConnectionSettings, path: str) -> None:
    from airflow_provider_iceprod.auth.tokens import decode_claims

    issuer = str(decode_claims(token).get("iss") or "").rstrip("/")
    if issuer and issuer != settings.oauth_url:
        raise CliError(
            f"--from-file: the token in {path} was issued by {issuer}, but connection "
            f"{settings.conn_id!r} uses {settings.oauth_url}. Pass --oauth-url {issuer} (and the matching "
            "--client-id) to use it."
        )


def _device_login(oidc: OIDCClient, args: argparse.Namespace, out: TextIO) -> GrantResult:
    auth = oidc.start_device_authorization("offline_access")
    show_device_code(auth, qr=not args.no_qr, out=out)
    countdown = Countdown(out)
    try:
        return oidc.poll_device_token(auth, on_tick=countdown)
    finally:
        countdown.done()


def _file_login(oidc: OIDCClient, settings: ConnectionSettings, path: str, out: TextIO) -> GrantResult:
    """Check the saved token with one refresh; keep the rotated one when the issuer rotates."""
    token = read_token_file(path)
    _check_issuer(token, settings, path)
    from airflow_provider_iceprod.auth.tokens import mask_token

    mask_token(token)
    grant = oidc.refresh(token)  # invalid_grant etc. -> IceProdAuthError (exit 3), no token in the text
    if grant.refresh_token and grant.refresh_token != token:
        print(
            f"The issuer rotated the refresh token: the one in {path} is now used up, so the tool that "
            "wrote it will ask for a new login.",
            file=sys.stderr,
        )
        return grant
    from dataclasses import replace

    return replace(grant, refresh_token=token)


def cmd_login(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_provider_iceprod.auth.oidc import OIDCClient
    from airflow_provider_iceprod.auth.state import variable_name
    from airflow_provider_iceprod.auth.state_stores import FileTokenStateStore
    from airflow_provider_iceprod.auth.tokens import identity_from_claims

    if args.from_file:
        read_token_file(args.from_file)  # bad input fails before any side effect
    store = None if args.print else airflow_store(args)
    existing = None
    if store is not None:
        store.check()
        existing = store.get(args.conn_id)
    conn = _login_connection(args, existing)
    settings = conn.settings()
    env_name = f"AIRFLOW_CONN_{args.conn_id.upper()}"
    if store is not None and env_name in os.environ:
        print(
            f"Note: ${env_name} is set in this environment; Airflow reads it before the connection saved "
            f"via the {store.name}. Unset it where tasks run, or use --print to update it.",
            file=sys.stderr,
        )
    if settings.client_secret:
        print(
            f"Note: connection {args.conn_id!r} has a client secret (password); the provider uses the "
            "client-credentials grant while it is set, not this login.",
            file=sys.stderr,
        )

    oidc = OIDCClient(settings.oauth_url, settings.client_id, retry=cli_retry(), conn_id=args.conn_id)
    if args.from_file:
        grant = _file_login(oidc, settings, args.from_file, out)
    else:
        grant = _device_login(oidc, args, out)
    assert grant.refresh_token is not None
    if grant.access_token is not None:
        who = identity_from_claims(grant.access_token.claims)
        groups = ", ".join(who.groups) or "no groups"
        print(f"Logged in as {who.username or 'an unnamed user'} ({groups}).", file=out)

    conn.extra["refresh_token"] = grant.refresh_token
    conn.extra["refresh_token_saved_at"] = time.time()
    if args.print:
        print(_render_connection(conn, args.print), file=out)
        print(
            f"Store this as connection {args.conn_id!r} (e.g. AIRFLOW_CONN_{args.conn_id.upper()}) in a "
            "secrets backend; it contains the refresh token, so keep it secret.",
            file=sys.stderr,
        )
        return EXIT_OK
    assert store is not None
    store.put(conn)
    store.delete_variable(variable_name(args.conn_id))  # an older overlay must not shadow this login
    local = FileTokenStateStore.for_connection(args.conn_id, settings.oauth_url, settings.client_id)
    if local is not None:
        local.clear()
    print(f"Saved the refresh token to connection {args.conn_id!r} via the {store.name}.", file=out)
    return EXIT_OK


def _render_connection(conn: StoredConnection, form: str) -> str:
    if form == "json":
        return json.dumps(
            {"conn_type": conn.conn_type, "host": conn.host, "port": conn.port, "extra": conn.extra}
        )
    from airflow.models import Connection

    return str(
        Connection(
            conn_id=conn.conn_id,
            conn_type=conn.conn_type,
            host=conn.host,
            port=conn.port,
            extra=json.dumps(conn.extra),
        ).get_uri()
    )
