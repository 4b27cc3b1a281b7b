"""TokenStatus: what ``airflow-iceprod status`` and the keep-alive DAG report. Holds no secret."""

from __future__ import annotations

from dataclasses import dataclass

from airflow_provider_iceprod.auth.cache import CacheEntry
from airflow_provider_iceprod.auth.tokens import identity_from_claims
from airflow_provider_iceprod.settings import ConnectionSettings


@dataclass(frozen=True)
class TokenStatus:
    """A secret-free summary of one connection's credential in this process."""

    conn_id: str
    issuer: str
    client_id: str
    credential: str  # refresh_token | client_credentials | none
    username: str
    groups: tuple[str, ...]
    access_expires_at: float | None
    refresh_source: str  # connection | overlay | memory | "" (client credentials)
    refresh_saved_at: float | None  # when the refresh token in use was issued (login or rotation)
    login_at: float | None  # the connection's refresh_token_saved_at (when `login` ran)
    last_refresh_at: float | None
    grants_in_process: int
    unsaved_rotation: bool = False  # the issuer rotated the refresh token and no store took the new one
    adopted_in_process: int = 0  # access tokens taken over from other processes (no grant)

    @classmethod
    def of(cls, settings: ConnectionSettings, entry: CacheEntry) -> TokenStatus:
        access = entry.access
        ident = identity_from_claims(access.claims) if access is not None else None
        rotating = settings.credential_kind == "refresh_token"
        return cls(
            conn_id=settings.conn_id,
            issuer=settings.oauth_url,
            client_id=settings.client_id,
            credential=settings.credential_kind,
            username=ident.username if ident else "",
            groups=ident.groups if ident else (),
            access_expires_at=access.expires_at if access is not None else None,
            refresh_source=entry.source if rotating else "",
            refresh_saved_at=entry.refresh_saved_at if rotating else None,
            login_at=settings.refresh_token_saved_at,
            last_refresh_at=entry.last_refresh_at,
            grants_in_process=entry.grants,
            unsaved_rotation=entry.unsaved_rotation,
            adopted_in_process=entry.adopted,
        )
