"""Token records, unverified JWT claim decoding and secret masking.

Nothing here does I/O. Every record that holds a secret hides it from ``repr``; callers register
each token with Airflow's secret masker as soon as it exists (the provider through
:mod:`~airflow_provider_iceprod.auth.masking`, bounded per credential; one-off callers through
:func:`mask_token`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_iceprod.models import Identity

log = logging.getLogger(__name__)

#: Access tokens are reused until this many seconds before they expire (Databricks' lead time) ...
DEFAULT_LEAD_TIME = 120.0
#: ... but never more than this fraction of their lifetime, so short-lived tokens are reused too.
MAX_LEAD_FRACTION = 0.25
#: Values that are not a token: what Airflow's UI writes back after showing a masked value.
NOT_TOKENS = frozenset({"", "***"})


def login_command(conn_id: str) -> str:
    """The command a person runs to (re)create the credentials of ``conn_id``."""
    return f"airflow-iceprod login --conn-id {conn_id}"


def fingerprint(secret: str | None) -> str:
    """A short, non-reversible fingerprint of a secret: safe to log and to use as a key."""
    if not secret:
        return ""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def decode_claims(token: str) -> dict[str, Any]:
    """Decode a JWT's payload **without** verifying it (the server verifies; we only read ``exp``).

    Returns ``{}`` for opaque tokens or anything that is not a JWT.
    """
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except (ValueError, TypeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def identity_from_claims(claims: dict[str, Any]) -> Identity:
    """IceProd's view of a token: ``preferred_username`` (else ``sub``) and the ``groups`` claim.

    A token with the ``iceprod-system`` role (``resource_access.iceprod.roles``) is ``iceprod-system``
    to IceProd whatever its ``preferred_username``: the owner it records for the datasets it creates.
    """
    resource = claims.get("resource_access")
    iceprod = resource.get("iceprod") if isinstance(resource, dict) else None
    roles = iceprod.get("roles") if isinstance(iceprod, dict) else None
    if isinstance(roles, list) and "iceprod-system" in roles:
        username = "iceprod-system"
    else:
        username = str(claims.get("preferred_username") or claims.get("sub") or "")
    groups = claims.get("groups") or []
    if isinstance(groups, str):
        groups = [groups]
    return Identity(username=username, groups=tuple(str(g) for g in groups))


@dataclass(frozen=True)
class AccessToken:
    """A bearer token and when it expires (epoch seconds). ``repr`` never shows the token."""

    value: str = field(repr=False)
    expires_at: float
    obtained_at: float
    claims: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_response(cls, value: str, expires_in: Any, *, now: float | None = None) -> AccessToken:
        """Expiry from the local receive time plus ``expires_in``, so a clock skew between this host
        and the issuer does not matter; else from the JWT's lifetime (``exp - iat``); else 5 min.
        """
        now = time.time() if now is None else now
        claims = decode_claims(value)
        try:
            lifetime = float(expires_in)
        except (TypeError, ValueError):
            exp, iat = claims.get("exp"), claims.get("iat")
            if isinstance(exp, int | float) and isinstance(iat, int | float) and exp > iat:
                lifetime = float(exp - iat)
            else:
                lifetime = 300.0
        return cls(value=value, expires_at=now + max(lifetime, 0.0), obtained_at=now, claims=claims)

    def seconds_left(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)

    def lead(self, lead_time: float) -> float:
        """``lead_time``, capped at :data:`MAX_LEAD_FRACTION` of this token's lifetime."""
        return min(lead_time, MAX_LEAD_FRACTION * max(self.expires_at - self.obtained_at, 0.0))

    def is_fresh(self, lead_time: float, now: float | None = None) -> bool:
        """True while the token has more than its (capped) lead time to live."""
        return self.seconds_left(now) > self.lead(lead_time)

    @property
    def identity(self) -> Identity:
        return identity_from_claims(self.claims)


@dataclass(frozen=True)
class GrantResult:
    """What a token endpoint returned. ``refresh_token`` is ``None`` when the issuer did not send one."""

    access_token: AccessToken | None
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_in: float | None = None
    scope: str = ""

    def secrets(self) -> list[str]:
        out = [self.refresh_token] if self.refresh_token else []
        if self.access_token is not None:
            out.append(self.access_token.value)
        return out


@dataclass(frozen=True)
class TokenState:
    """The token-state overlay: the newest refresh token of a connection, with where it belongs.

    ``fingerprint_of_base`` is the fingerprint of the connection's refresh token (the login) this state
    descends from, and ``generation`` counts the rotations since that login. Together they order states
    without comparing clocks of different hosts (``saved_at`` is informational). ``base_saved_at`` is the
    login's ``refresh_token_saved_at``, to order states of two different logins.

    ``access_token`` (with ``access_expires_at``/``access_obtained_at``, epoch seconds) is the access
    token the rotating grant returned. Other processes reuse it while it is fresh instead of rotating
    the refresh token again (see :meth:`shared_access`); it is stored where the refresh token is, which
    is the more powerful secret of the two.
    """

    refresh_token: str = field(repr=False)
    saved_at: float
    issuer: str
    client_id: str
    fingerprint_of_base: str = ""
    generation: int = 0
    base_saved_at: float = 0.0
    access_token: str = field(default="", repr=False)
    access_expires_at: float = 0.0
    access_obtained_at: float = 0.0

    def to_json(self) -> str:
        doc: dict[str, Any] = {
            "refresh_token": self.refresh_token,
            "saved_at": self.saved_at,
            "issuer": self.issuer,
            "client_id": self.client_id,
            "fingerprint_of_base": self.fingerprint_of_base,
            "generation": self.generation,
            "base_saved_at": self.base_saved_at,
        }
        if self.access_token:
            doc["access_token"] = self.access_token
            doc["access_expires_at"] = self.access_expires_at
            doc["access_obtained_at"] = self.access_obtained_at
        return json.dumps(doc)

    def shared_access(self, lead_time: float, now: float | None = None) -> AccessToken | None:
        """The access token stored with this state while it is fresh (more than its lead time left)."""
        if not self.access_token:
            return None
        token = AccessToken(
            value=self.access_token,
            expires_at=self.access_expires_at,
            obtained_at=self.access_obtained_at,
            claims=decode_claims(self.access_token),
        )
        return token if token.is_fresh(lead_time, now) else None

    def supersedes(self, other: TokenState | None) -> bool:
        """True when this state should replace ``other`` in a store (the overlay never goes backwards)."""
        if other is None or (other.issuer, other.client_id) != (self.issuer, self.client_id):
            return True
        if other.fingerprint_of_base == self.fingerprint_of_base:
            return self.generation > other.generation
        return self.base_saved_at >= other.base_saved_at

    @classmethod
    def from_json(cls, raw: str | bytes | dict[str, Any] | None, *, where: str = "") -> TokenState | None:
        """Parse a stored overlay; anything that is not one is ignored with a warning (never raises)."""
        if raw is None:
            return None
        what = f"IceProd token-state overlay{' in ' + where if where else ''}"
        try:
            doc = raw if isinstance(raw, dict) else json.loads(raw)
            token = str(doc["refresh_token"]).strip()
            if token in NOT_TOKENS:
                log.warning(
                    "Ignoring the %s: its refresh_token is %r, not a token (was it saved from a masked "
                    "value in Airflow's UI?). The next refresh rewrites it.",
                    what,
                    token,
                )
                return None
            return cls(
                refresh_token=token,
                saved_at=float(doc.get("saved_at") or 0.0),
                issuer=str(doc.get("issuer") or "").rstrip("/"),
                client_id=str(doc.get("client_id") or ""),
                fingerprint_of_base=str(doc.get("fingerprint_of_base") or ""),
                generation=int(doc.get("generation") or 0),
                base_saved_at=float(doc.get("base_saved_at") or 0.0),
                access_token=_stored_access_token(doc),
                access_expires_at=float(doc.get("access_expires_at") or 0.0),
                access_obtained_at=float(doc.get("access_obtained_at") or 0.0),
            )
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("Ignoring the %s: it is not valid JSON of the expected shape", what)
            return None


def _stored_access_token(doc: dict[str, Any]) -> str:
    """The shared access token of a stored overlay, or "" (absent, or a masked value from the UI)."""
    value = str(doc.get("access_token") or "").strip()
    return "" if value in NOT_TOKENS else value


def mask_token(value: str | None) -> None:
    """Register a token with Airflow's secret masker (task process and supervisor)."""
    if not value:
        return
    try:
        from airflow.sdk.log import mask_secret

        mask_secret(value)
    except Exception:  # masking must never break authentication
        log.debug("Could not register a token with the secret masker", exc_info=True)
