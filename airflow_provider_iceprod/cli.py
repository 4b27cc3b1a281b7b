"""``airflow-iceprod``: log in to IceProd and manage the tokens stored in an Airflow connection.

Subcommands::

    airflow-iceprod login   [--conn-id ID] [--api-url URL] [--oauth-url URL] [--client-id ID]
                            [--airflow-url URL (--airflow-user U --airflow-password P | --airflow-token T)]
                            [--print {uri,json}] [--no-qr]
    airflow-iceprod status  [--conn-id ID] [--json]
    airflow-iceprod refresh [--conn-id ID]
    airflow-iceprod logout  [--conn-id ID] [--airflow-url URL ...]
    airflow-iceprod local-server ...   (the local IceProd stand-in; see docs/testing.md)

``login`` runs the OAuth device grant (PKCE, ``offline_access``) and writes the refresh token into the
connection: through Airflow's metadata DB (default; the CLI runs where Airflow is configured), through
Airflow's REST API (``--airflow-url``), or prints the connection (``--print``). ``status``, ``refresh``
and ``logout`` read the connection the way Airflow does (environment, secrets backends, metadata DB).

Exit codes: 0 success, 1 unexpected failure, 2 bad input or configuration, 3 authentication failed
(denied, expired or revoked), 4 a server could not be reached.

This CLI runs with metadata-DB access, so unlike tasks it uses Airflow's ORM: it updates the
connection itself when the issuer rotates the refresh token. Module import stays light: Airflow,
httpx and qrcode are imported only by the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from airflow_provider_iceprod.auth.oidc import DeviceAuthorization
    from airflow_provider_iceprod.auth.provider import TokenStatus
    from airflow_provider_iceprod.auth.tokens import TokenState
    from airflow_provider_iceprod.retry import RetrySettings
    from airflow_provider_iceprod.settings import ConnectionSettings
    from airflow_provider_iceprod.transport import Transport

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_AUTH, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
DEFAULT_CONN_ID = "iceprod_default"
CONN_TYPE = "iceprod"
PASSWORD_ENV = "AIRFLOW_ICEPROD_AIRFLOW_PASSWORD"
AIRFLOW_TOKEN_ENV = "AIRFLOW_ICEPROD_AIRFLOW_TOKEN"
#: Connection extras the login writes; every other extra of an existing connection is kept.
URL_EXTRAS = ("oauth_url", "client_id", "actions_url", "website_url")


class CliError(Exception):
    """A failure with a message for the user and an exit code."""

    def __init__(self, message: str, code: int = EXIT_CONFIG) -> None:
        super().__init__(message)
        self.code = code


def _retry() -> RetrySettings:
    from airflow_provider_iceprod.retry import RetrySettings

    return RetrySettings(retry_limit=3, retry_delay=0.5, max_delay=5.0, timeout=30.0)


# ------------------------------------------------------------------------------------------------
# Where connections live: the metadata DB, Airflow's REST API, or nowhere (--print)
# ------------------------------------------------------------------------------------------------


@dataclass
class StoredConnection:
    """The parts of an Airflow connection this CLI reads and writes."""

    conn_id: str
    host: str | None = None
    password: str | None = field(default=None, repr=False)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # holds the refresh token
    conn_type: str = CONN_TYPE
    origin: str = "metadata DB"  # metadata DB | Airflow REST API | environment or secrets backend

    def settings(self) -> ConnectionSettings:
        from airflow_provider_iceprod.settings import ConnectionSettings

        return ConnectionSettings.from_fields(self.conn_id, self.host, self.password, self.extra)


class MetadataDb:
    """Connections and Variables through Airflow's ORM (the CLI runs where the DB is configured)."""

    name = "metadata DB"

    @staticmethod
    def _session() -> Any:
        from airflow.utils.session import create_session

        return create_session()

    def check(self) -> None:
        """Fail early (before any login) when the metadata DB is not reachable or not migrated."""
        from airflow.models import Connection
        from sqlalchemy import select

        try:
            with self._session() as session:
                session.execute(select(Connection.id).limit(1)).all()
        except Exception as exc:
            raise CliError(
                f"Cannot use Airflow's metadata DB ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). "
                "Run this where Airflow's DB is configured (AIRFLOW_HOME, "
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN), or write through the REST API with --airflow-url, "
                "or print the connection with --print.",
                EXIT_CONFIG,
            ) from None

    def get(self, conn_id: str) -> StoredConnection | None:
        from airflow.models import Connection
        from sqlalchemy import select

        with self._session() as session:
            conn = session.scalar(select(Connection).where(Connection.conn_id == conn_id))
            if conn is None:
                return None
            return StoredConnection(
                conn_id=conn_id,
                host=conn.host,
                password=conn.password,
                extra=dict(conn.extra_dejson),
                conn_type=conn.conn_type or CONN_TYPE,
            )

    def put(self, conn: StoredConnection) -> None:
        """Create or update ``conn`` (extras replaced by ``conn.extra``)."""
        from airflow.models import Connection
        from sqlalchemy import select

        with self._session() as session:
            row = session.scalar(select(Connection).where(Connection.conn_id == conn.conn_id))
            if row is None:
                row = Connection(conn_id=conn.conn_id, conn_type=conn.conn_type)
                session.add(row)
            row.conn_type = conn.conn_type
            row.host = conn.host
            row.set_extra(json.dumps(conn.extra))

    def get_variable(self, key: str) -> str | None:
        from airflow.models import Variable
        from sqlalchemy import select

        with self._session() as session:
            row = session.scalar(select(Variable).where(Variable.key == key))
            return None if row is None else row.val

    def set_variable(self, key: str, value: str, description: str) -> None:
        from airflow.models import Variable
        from sqlalchemy import select

        with self._session() as session:
            row = session.scalar(select(Variable).where(Variable.key == key))
            if row is None:
                session.add(Variable(key=key, val=value, description=description))
            else:
                row.val = value

    def delete_variable(self, key: str) -> bool:
        from airflow.models import Variable
        from sqlalchemy import delete

        with self._session() as session:
            return bool(session.execute(delete(Variable).where(Variable.key == key)).rowcount)


class AirflowRestApi:
    """Connections and Variables through Airflow's public REST API (``/api/v2``)."""

    name = "Airflow REST API"

    def __init__(self, url: str, *, token: str | None, user: str | None, password: str | None) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self._user = user
        self._password = password
        self._transport: Transport | None = None

    def _api(self) -> Transport:
        if self._transport is not None:
            return self._transport
        from airflow_provider_iceprod.auth.httpx_auth import IceProdAuth, StaticBearer
        from airflow_provider_iceprod.exceptions import IceProdError
        from airflow_provider_iceprod.transport import Transport

        token = self._token
        if not token:
            if not (self._user and self._password):
                raise CliError(
                    "--airflow-url needs Airflow credentials: --airflow-user and --airflow-password "
                    f"(or ${PASSWORD_ENV}), or --airflow-token (or ${AIRFLOW_TOKEN_ENV})."
                )
            try:
                answer = Transport(self.url, auth=None, retry=_retry(), service="Airflow").request(
                    "POST", "/auth/token", json={"username": self._user, "password": self._password}
                )
            except IceProdError as exc:
                raise CliError(
                    f"Could not log in to Airflow at {self.url} as {self._user!r}: {exc}. Check "
                    "--airflow-url, --airflow-user and --airflow-password (the simple auth manager's "
                    "/auth/token), or pass "
                    "--airflow-token.",
                    EXIT_AUTH if exc.status_code in (401, 403) else EXIT_UNREACHABLE,
                ) from None
            token = (answer or {}).get("access_token") if isinstance(answer, dict) else None
            if not token:
                raise CliError(f"Airflow at {self.url} returned no access_token from /auth/token.", EXIT_AUTH)
        self._transport = Transport(
            self.url,
            auth=IceProdAuth(StaticBearer(token), service="Airflow"),
            retry=_retry(),
            service="Airflow",
        )
        return self._transport

    def check(self) -> None:
        self._api()

    def get(self, conn_id: str) -> StoredConnection | None:
        from airflow_provider_iceprod.exceptions import IceProdNotFoundError

        try:
            doc = self._api().request("GET", f"/api/v2/connections/{conn_id}")
        except IceProdNotFoundError:
            return None
        extra = doc.get("extra") or "{}"
        try:
            extras = json.loads(extra) if isinstance(extra, str) else dict(extra)
        except ValueError:
            extras = {}
        # The API masks extras whose names contain "token" ("***"): ours are replaced or removed anyway.
        for key in ("refresh_token", "refresh_token_saved_at"):
            if extras.get(key) == "***":
                del extras[key]
        return StoredConnection(
            conn_id=conn_id,
            host=doc.get("host"),
            extra=extras,
            conn_type=doc.get("conn_type") or CONN_TYPE,
            origin=self.name,
        )

    def put(self, conn: StoredConnection) -> None:
        """PATCH the connection, or POST it when missing. Masked extras ("***") keep their stored value."""
        from airflow_provider_iceprod.exceptions import IceProdNotFoundError

        body = {
            "connection_id": conn.conn_id,
            "conn_type": conn.conn_type,
            "host": conn.host,
            "extra": json.dumps(conn.extra),
        }
        try:
            self._api().request("PATCH", f"/api/v2/connections/{conn.conn_id}", json=body)
        except IceProdNotFoundError:
            self._api().request("POST", "/api/v2/connections", json=body)

    def get_variable(self, key: str) -> str | None:
        return None  # the REST API masks the overlay Variable's value ("token" in its name)

    def set_variable(self, key: str, value: str, description: str) -> None:  # pragma: no cover - unused
        raise CliError("Writing the token-state overlay through the REST API is not supported.")

    def delete_variable(self, key: str) -> bool:
        from airflow_provider_iceprod.exceptions import IceProdNotFoundError

        try:
            self._api().request("DELETE", f"/api/v2/variables/{key}")
        except IceProdNotFoundError:
            return False
        return True


def _airflow_store(args: argparse.Namespace) -> MetadataDb | AirflowRestApi:
    if getattr(args, "airflow_url", None):
        return AirflowRestApi(
            args.airflow_url,
            token=args.airflow_token or os.environ.get(AIRFLOW_TOKEN_ENV),
            user=args.airflow_user,
            password=args.airflow_password or os.environ.get(PASSWORD_ENV),
        )
    return MetadataDb()


def _read_connection(conn_id: str, db: MetadataDb) -> StoredConnection:
    """The connection as tasks see it: environment and secrets backends first, then the DB."""
    from airflow.models import Connection

    env_name = f"AIRFLOW_CONN_{conn_id.upper()}"
    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except Exception as exc:  # AirflowNotFoundException, or no usable DB
        db.check()
        raise CliError(
            f"No Airflow connection {conn_id!r} ({type(exc).__name__}). "
            f"Create it with `airflow-iceprod login --conn-id {conn_id}`."
        ) from None
    stored = db.get(conn_id) if env_name not in os.environ else None
    return StoredConnection(
        conn_id=conn_id,
        host=conn.host,
        password=conn.password,
        extra=dict(conn.extra_dejson),
        conn_type=conn.conn_type or CONN_TYPE,
        origin="metadata DB" if stored is not None else "environment or secrets backend",
    )


# ------------------------------------------------------------------------------------------------
# The CLI's token-state store: the connection itself when it is in the DB, else the overlay Variable
# ------------------------------------------------------------------------------------------------


class CliTokenStateStore:
    """Token state for the CLI, with DB access.

    ``load`` returns the newest of the DB connection's refresh token and the overlay Variable (other
    processes may have rotated either). ``save`` writes a rotated token to the overlay Variable and,
    when the connection lives in the DB, into the connection itself.
    """

    def __init__(self, conn: StoredConnection, db: MetadataDb) -> None:
        from airflow_provider_iceprod.auth.state import variable_name

        self.conn = conn
        self.db = db
        self.key = variable_name(conn.conn_id)
        self.in_db = conn.origin == "metadata DB"
        self.last_saved_to = ""

    def load(self) -> TokenState | None:
        from airflow_provider_iceprod.auth.tokens import TokenState, fingerprint

        settings = self.conn.settings()
        states: list[TokenState] = []
        overlay = TokenState.from_json(self.db.get_variable(self.key))
        if overlay is not None:
            states.append(overlay)
        if self.in_db:
            current = self.db.get(self.conn.conn_id)
            token = (current.extra.get("refresh_token") if current else None) or None
            if current is not None and token:
                saved_at = current.extra.get("refresh_token_saved_at")
                states.append(
                    TokenState(
                        refresh_token=str(token),
                        saved_at=float(saved_at or 0.0),
                        issuer=settings.oauth_url,
                        client_id=settings.client_id,
                        fingerprint_of_base=fingerprint(settings.refresh_token),
                    )
                )
        return max(states, key=lambda s: s.saved_at) if states else None

    def save(self, state: TokenState) -> bool:
        """Overlay Variable first (what tasks read), then the DB connection's token itself.

        ``refresh_token_saved_at`` keeps meaning "when the login ran"; the overlay's ``saved_at`` is newer,
        so tasks pick the same token from either place.
        """
        self.db.set_variable(self.key, state.to_json(), "IceProd token state (airflow-iceprod)")
        self.last_saved_to = f"Variable {self.key}"
        if self.in_db:
            current = self.db.get(self.conn.conn_id)
            if current is not None:
                current.extra["refresh_token"] = state.refresh_token
                self.db.put(current)
                self.last_saved_to += f" and connection {self.conn.conn_id!r} in the metadata DB"
        return True

    def clear(self) -> None:
        self.db.delete_variable(self.key)

    async def aload(self) -> TokenState | None:
        return self.load()

    async def asave(self, state: TokenState) -> bool:
        return self.save(state)


# ------------------------------------------------------------------------------------------------
# Output helpers
# ------------------------------------------------------------------------------------------------


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    return _span(seconds) + " ago" if seconds >= 1 else "just now"


def _span(seconds: float) -> str:
    seconds = int(abs(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "unknown"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _print_qr(text: str, out: TextIO) -> None:
    try:
        import qrcode
    except ImportError:
        print(
            "(install the `qrcode` package for a QR code: pip install 'airflow-provider-iceprod[cli]')",
            file=out,
        )
        return
    qr = qrcode.QRCode(border=1)
    qr.add_data(text)
    qr.make(fit=True)
    qr.print_ascii(out=out, invert=True)


class Countdown:
    """Shows the time left to approve: one updating line on a terminal, a line every 30 s otherwise."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._last_line = -1.0

    def __call__(self, remaining: float) -> None:
        text = f"Waiting for approval... {int(remaining) // 60}:{int(remaining) % 60:02d} left"
        if self.tty:
            print(f"\r{text} ", end="", file=self.out, flush=True)
        elif self._last_line < 0 or self._last_line - remaining >= 30:
            print(text, file=self.out, flush=True)
            self._last_line = remaining

    def done(self) -> None:
        if self.tty:
            print(file=self.out)


def _show_device_code(auth: DeviceAuthorization, *, qr: bool, out: TextIO) -> None:
    print(f"To log in to IceProd, open {auth.verification_uri}", file=out)
    print(f"and enter the code: {auth.user_code}", file=out)
    if auth.verification_uri_complete:
        print(f"(or open {auth.verification_uri_complete} directly)", file=out)
    if qr:
        _print_qr(auth.verification_uri_complete or auth.verification_uri, out)
    print(f"The code expires in {_span(auth.expires_in)}.", file=out, flush=True)


# ------------------------------------------------------------------------------------------------
# Subcommands
# ------------------------------------------------------------------------------------------------


def _login_connection(args: argparse.Namespace, existing: StoredConnection | None) -> StoredConnection:
    """The connection to write: existing fields, overridden by the command line, validated."""
    conn = existing or StoredConnection(conn_id=args.conn_id)
    conn.extra = dict(conn.extra)
    if args.api_url:
        conn.host = args.api_url
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
    conn.extra["oauth_url"] = settings.oauth_url
    conn.extra["client_id"] = settings.client_id
    return conn


def cmd_login(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_provider_iceprod.auth.oidc import OIDCClient
    from airflow_provider_iceprod.auth.state import variable_name
    from airflow_provider_iceprod.auth.tokens import identity_from_claims

    store = None if args.print else _airflow_store(args)
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

    oidc = OIDCClient(settings.oauth_url, settings.client_id, retry=_retry(), conn_id=args.conn_id)
    auth = oidc.start_device_authorization("offline_access")
    _show_device_code(auth, qr=not args.no_qr, out=out)
    countdown = Countdown(out)
    try:
        grant = oidc.poll_device_token(auth, on_tick=countdown)
    finally:
        countdown.done()
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
    print(f"Saved the refresh token to connection {args.conn_id!r} via the {store.name}.", file=out)
    return EXIT_OK


def _render_connection(conn: StoredConnection, form: str) -> str:
    if form == "json":
        return json.dumps({"conn_type": conn.conn_type, "host": conn.host, "extra": conn.extra})
    from airflow.models import Connection

    return str(
        Connection(
            conn_id=conn.conn_id, conn_type=conn.conn_type, host=conn.host, extra=json.dumps(conn.extra)
        ).get_uri()
    )


def _provider_for(args: argparse.Namespace) -> tuple[Any, CliTokenStateStore]:
    from airflow_provider_iceprod.auth.provider import TokenProvider

    db = MetadataDb()
    conn = _read_connection(args.conn_id, db)
    settings = conn.settings()
    store = CliTokenStateStore(conn, db)
    provider = TokenProvider(settings, retry=_retry(), state_store=store if settings.refresh_token else None)
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
        lines.append(("Access token", f"valid until {_when(status.access_expires_at)} ({_span(left)} left)"))
    if status.credential == "refresh_token":
        used = sources.get(status.refresh_source, status.refresh_source)
        text = f"used the one from {used}"
        if store.last_saved_to:
            text += f"; the issuer rotated it, the new one is saved in {store.last_saved_to}"
        lines.append(("Refresh token", text))
        lines.append(("Login", _ago(now - status.login_at) if status.login_at else "unknown"))
    lines.append(("Last refresh", _ago(now - status.last_refresh_at if status.last_refresh_at else None)))
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
        f"Refreshed: {status.username or 'unknown user'} has an access token valid for {_span(left)}.",
        file=out,
    )
    if store.last_saved_to:
        print(f"The issuer rotated the refresh token; saved the new one in {store.last_saved_to}.", file=out)
    return EXIT_OK


def cmd_logout(args: argparse.Namespace, out: TextIO) -> int:
    from airflow_provider_iceprod.auth.oidc import OIDCClient
    from airflow_provider_iceprod.auth.state import variable_name
    from airflow_provider_iceprod.auth.tokens import TokenState

    store = _airflow_store(args)
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
    oidc = OIDCClient(settings.oauth_url, settings.client_id, retry=_retry(), conn_id=args.conn_id)
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


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------


def _add_airflow_api_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Airflow REST API (instead of the metadata DB)")
    group.add_argument("--airflow-url", help="Airflow api-server base URL, e.g. http://localhost:8080")
    group.add_argument("--airflow-user", help="Airflow user (simple auth manager: POST /auth/token)")
    group.add_argument("--airflow-password", help=f"Airflow password (or set ${PASSWORD_ENV})")
    group.add_argument(
        "--airflow-token", help=f"an Airflow API JWT instead of user/password (or ${AIRFLOW_TOKEN_ENV})"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airflow-iceprod",
        description="Log in to IceProd and manage the tokens of an Airflow `iceprod` connection.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    login = sub.add_parser("login", help="device login; writes the refresh token into the connection")
    login.add_argument("--conn-id", default=DEFAULT_CONN_ID, help="connection id (default: %(default)s)")
    login.add_argument("--api-url", help="IceProd API URL (the connection's host)")
    login.add_argument("--oauth-url", help="OpenID issuer URL (Keycloak realm)")
    login.add_argument("--client-id", help="OAuth client id (default: iceprod-public)")
    login.add_argument("--actions-url", help="base URL of /actions/* when it is not the API URL")
    login.add_argument("--website-url", help="IceProd website URL, for links")
    login.add_argument("--print", choices=("uri", "json"), help="print the connection instead of saving it")
    login.add_argument("--no-qr", action="store_true", help="do not print a QR code")
    _add_airflow_api_args(login)
    login.set_defaults(func=cmd_login)

    status = sub.add_parser("status", help="whose token, groups, expiry and age (no secret shown)")
    status.add_argument("--conn-id", default=DEFAULT_CONN_ID)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    refresh = sub.add_parser("refresh", help="force a token refresh now and report it")
    refresh.add_argument("--conn-id", default=DEFAULT_CONN_ID)
    refresh.set_defaults(func=cmd_refresh)

    logout = sub.add_parser("logout", help="revoke the refresh token and remove it from Airflow")
    logout.add_argument("--conn-id", default=DEFAULT_CONN_ID)
    _add_airflow_api_args(logout)
    logout.set_defaults(func=cmd_logout)

    sub.add_parser("local-server", help="run the local IceProd stand-in (see `local-server --help`)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "local-server":
        from airflow_provider_iceprod.testing.cli import main as local_server_main

        return int(local_server_main(argv[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_CONFIG
    import logging

    logging.getLogger("rest_tools").setLevel(logging.WARNING)
    return _run(args)


def _run(args: argparse.Namespace) -> int:
    from airflow_provider_iceprod.exceptions import (
        IceProdAuthError,
        IceProdConfigError,
        IceProdError,
        IceProdTransientError,
    )

    out = sys.stdout
    try:
        return int(args.func(args, out))
    except CliError as exc:
        print(f"airflow-iceprod {args.command}: {exc}", file=sys.stderr)
        return exc.code
    except IceProdAuthError as exc:
        print(f"airflow-iceprod {args.command}: {exc}", file=sys.stderr)
        return EXIT_AUTH
    except IceProdConfigError as exc:
        print(f"airflow-iceprod {args.command}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except IceProdTransientError as exc:
        print(f"airflow-iceprod {args.command}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except IceProdError as exc:
        print(f"airflow-iceprod {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"\nairflow-iceprod {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
