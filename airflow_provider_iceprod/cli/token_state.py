"""The CLI's token-state store: the overlay Variable in the metadata DB (and this host's file copy).

The CLI has DB access, so it writes the overlay through the ORM, exactly like scripts run with
``_AIRFLOW_PROCESS_CONTEXT=server``. It no longer rewrites the connection's own refresh token: the
connection keeps the login, the overlay the rotations that descend from it (``fingerprint_of_base``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_iceprod.cli.stores import StoredConnection

if TYPE_CHECKING:
    from airflow_provider_iceprod.auth.state import TokenStateStore
    from airflow_provider_iceprod.auth.tokens import TokenState


class CliTokenStateStore:
    """The overlay for ``status``/``refresh``; remembers where the last rotated token went."""

    def __init__(self, conn: StoredConnection) -> None:
        from airflow_provider_iceprod.auth.state import variable_name
        from airflow_provider_iceprod.auth.state_stores import (
            DbTokenStateStore,
            FileTokenStateStore,
            LayeredTokenStateStore,
        )

        settings = conn.settings()
        self.conn = conn
        self.key = variable_name(conn.conn_id)
        db = DbTokenStateStore(conn.conn_id)
        local = FileTokenStateStore.for_connection(conn.conn_id, settings.oauth_url, settings.client_id)
        self.store: TokenStateStore = LayeredTokenStateStore(db, local) if local is not None else db
        self.last_saved_to = ""

    def load(self) -> TokenState | None:
        return self.store.load()

    def save(self, state: TokenState) -> bool:
        ok = self.store.save(state)
        self.last_saved_to = f"Variable {self.key} in the metadata DB" if ok else ""
        return ok

    def clear(self) -> None:
        self.store.clear()

    async def aload(self) -> TokenState | None:
        return self.load()

    async def asave(self, state: TokenState) -> bool:
        return self.save(state)
