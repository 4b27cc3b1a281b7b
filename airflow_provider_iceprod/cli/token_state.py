"""The CLI's token-state store: the connection itself when it is in the DB, else the overlay Variable."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow_provider_iceprod.cli.stores import MetadataDb, StoredConnection

if TYPE_CHECKING:
    from airflow_provider_iceprod.auth.tokens import TokenState


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
