"""Where connections live: the metadata DB, Airflow's REST API, or nowhere (``--print``)."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_iceprod.cli.common import (
    AIRFLOW_TOKEN_ENV,
    CONN_TYPE,
    EXIT_AUTH,
    EXIT_CONFIG,
    EXIT_UNREACHABLE,
    PASSWORD_ENV,
    CliError,
    cli_retry,
)

if TYPE_CHECKING:
    from airflow_provider_iceprod.settings import ConnectionSettings
    from airflow_provider_iceprod.transport import Transport


@dataclass
class StoredConnection:
    """The parts of an Airflow connection this CLI reads and writes."""

    conn_id: str
    host: str | None = None
    port: int | None = None  # stored so Airflow's Test button posts it back (it sends 0 for none)
    password: str | None = field(default=None, repr=False)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # holds the refresh token
    conn_type: str = CONN_TYPE
    origin: str = "metadata DB"  # metadata DB | Airflow REST API | environment or secrets backend

    @classmethod
    def of(cls, conn_id: str, conn: Any, origin: str = "metadata DB") -> StoredConnection:
        """The fields of an Airflow ``Connection`` (ORM or Task SDK)."""
        return cls(
            conn_id=conn_id,
            host=conn.host,
            port=conn.port,
            password=conn.password,
            extra=dict(conn.extra_dejson),
            conn_type=conn.conn_type or CONN_TYPE,
            origin=origin,
        )

    def settings(self) -> ConnectionSettings:
        from airflow_provider_iceprod.settings import ConnectionSettings

        return ConnectionSettings.from_fields(self.conn_id, self.host, self.password, self.extra, self.port)


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
            return StoredConnection.of(conn_id, conn)

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
            row.port = conn.port
            row.set_extra(json.dumps(conn.extra))

    def get_variable(self, key: str) -> str | None:
        from airflow.models import Variable
        from sqlalchemy import select

        with self._session() as session:
            row = session.scalar(select(Variable).where(Variable.key == key))
            return None if row is None else row.val

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
                answer = Transport(self.url, auth=None, retry=cli_retry(), service="Airflow").request(
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
            retry=cli_retry(),
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
            port=doc.get("port"),
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
            "port": conn.port,
            "extra": json.dumps(conn.extra),
        }
        try:
            self._api().request("PATCH", f"/api/v2/connections/{conn.conn_id}", json=body)
        except IceProdNotFoundError:
            self._api().request("POST", "/api/v2/connections", json=body)

    def get_variable(self, key: str) -> str | None:
        return None  # the REST API masks the overlay Variable's value ("token" in its name)

    def delete_variable(self, key: str) -> bool:
        from airflow_provider_iceprod.exceptions import IceProdNotFoundError

        try:
            self._api().request("DELETE", f"/api/v2/variables/{key}")
        except IceProdNotFoundError:
            return False
        return True


def airflow_store(args: argparse.Namespace) -> MetadataDb | AirflowRestApi:
    if getattr(args, "airflow_url", None):
        return AirflowRestApi(
            args.airflow_url,
            token=args.airflow_token or os.environ.get(AIRFLOW_TOKEN_ENV),
            user=args.airflow_user,
            password=args.airflow_password or os.environ.get(PASSWORD_ENV),
        )
    return MetadataDb()


def read_connection(conn_id: str, db: MetadataDb) -> StoredConnection:
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
    origin = "metadata DB" if stored is not None else "environment or secrets backend"
    return StoredConnection.of(conn_id, conn, origin=origin)
