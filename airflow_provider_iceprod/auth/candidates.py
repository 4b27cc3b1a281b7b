"""Which refresh token to use next: pure choices over the connection, the overlay and this process.

No I/O and no locks: :class:`~airflow_provider_iceprod.auth.provider.TokenProvider` calls these under
its locks. States are ordered by ``fingerprint_of_base`` and ``generation`` (rotations since the
login), never by comparing clocks of different hosts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from airflow_provider_iceprod.auth.cache import CacheEntry
from airflow_provider_iceprod.auth.tokens import GrantResult, TokenState
from airflow_provider_iceprod.settings import ConnectionSettings

#: Ties between sources of the same generation prefer memory, then the overlay.
_RANK = {"connection": 0, "overlay": 1, "memory": 2}


@dataclass(frozen=True)
class Candidate:
    """A refresh token to try, and where it came from. ``repr`` never shows the token."""

    token: str = field(repr=False)
    saved_at: float
    source: str  # connection | overlay | memory
    generation: int = 0  # rotations since the login

    @classmethod
    def of_overlay(cls, state: TokenState) -> Candidate:
        return cls(state.refresh_token, state.saved_at, "overlay", state.generation)


def same_client(settings: ConnectionSettings, state: TokenState | None) -> bool:
    """The state belongs to the connection's issuer and client."""
    return state is not None and (state.issuer, state.client_id) == (settings.oauth_url, settings.client_id)


def overlay_applies(settings: ConnectionSettings, base_fingerprint: str, state: TokenState | None) -> bool:
    """The overlay applies when it descends from the connection's token (no clock comparison)."""
    if state is None or not same_client(settings, state):
        return False
    if not settings.refresh_token:
        return True
    if state.fingerprint_of_base:
        return state.fingerprint_of_base == base_fingerprint
    # an overlay written before fingerprints: only the login time can order it
    return settings.refresh_token_saved_at is None or state.saved_at > settings.refresh_token_saved_at


def choose(
    settings: ConnectionSettings, base_fingerprint: str, entry: CacheEntry, overlay: TokenState | None
) -> Candidate:
    """The newest refresh token known (most rotations); ties prefer memory, then overlay."""
    candidates: list[Candidate] = []
    if settings.refresh_token:
        candidates.append(
            Candidate(settings.refresh_token, settings.refresh_token_saved_at or 0.0, "connection")
        )
    if overlay is not None and overlay_applies(settings, base_fingerprint, overlay):
        generation = overlay.generation if overlay.fingerprint_of_base else 1
        candidates.append(Candidate(overlay.refresh_token, overlay.saved_at, "overlay", generation))
    if entry.refresh_token:
        memory = Candidate(
            entry.refresh_token, entry.refresh_saved_at or 0.0, "memory", entry.refresh_generation
        )
        candidates.append(memory)
    return max(candidates, key=lambda c: (c.generation, _RANK[c.source]))


def new_from_overlay(
    settings: ConnectionSettings, overlay: TokenState | None, tried: set[str]
) -> Candidate | None:
    """After ``invalid_grant``: the overlay's token, when it is one not tried yet."""
    if overlay is None or not same_client(settings, overlay) or overlay.refresh_token in tried:
        return None
    return Candidate.of_overlay(overlay)


def rotation(
    settings: ConnectionSettings, base_fingerprint: str, used: Candidate, grant: GrantResult
) -> TokenState | None:
    """The state to persist when the issuer rotated the refresh token (with the access token to share)."""
    if not grant.refresh_token or grant.refresh_token == used.token:
        return None
    access = grant.access_token
    return TokenState(
        refresh_token=grant.refresh_token,
        saved_at=time.time(),
        issuer=settings.oauth_url,
        client_id=settings.client_id,
        fingerprint_of_base=base_fingerprint,
        generation=used.generation + 1,
        base_saved_at=settings.refresh_token_saved_at or 0.0,
        access_token=access.value if access is not None else "",
        access_expires_at=access.expires_at if access is not None else 0.0,
        access_obtained_at=access.obtained_at if access is not None else 0.0,
    )


def remember(entry: CacheEntry, used: Candidate, rotated: TokenState | None) -> None:
    """Keep the newest refresh token in this process's memory (first: it cannot fail)."""
    if rotated is not None:
        entry.refresh_token, entry.refresh_saved_at = rotated.refresh_token, rotated.saved_at
        entry.refresh_generation = rotated.generation
    else:
        entry.refresh_token, entry.refresh_saved_at = used.token, used.saved_at
        entry.refresh_generation = used.generation
