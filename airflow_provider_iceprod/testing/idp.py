"""The stand-in's OpenID Connect identity provider, as Keycloak looks from a client's side.

RS256 JWTs signed with a key made at start-up (``kid`` in the JWKS). Offline refresh tokens are JWTs
too (so rest-tools' ``OpenIDRestClient`` can read their scope), each tied to a revocable session.
Grants: ``refresh_token`` (optionally single-use, rotating), ``client_credentials`` and the RFC 8628
device flow with PKCE S256 (in :mod:`.idp_device`). The HTTP side is in :mod:`.handlers_idp`.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from airflow_provider_iceprod.testing.idp_device import DeviceCode, DeviceFlow
from airflow_provider_iceprod.testing.oauth import DEVICE_GRANT, InvalidAccessToken, OAuthError

OFFLINE_TOKEN_LIFETIME = 10 * 365 * 86400


@dataclass(frozen=True)
class UserSpec:
    """A user of the stand-in's identity provider: a name and Keycloak group paths."""

    username: str
    groups: tuple[str, ...] = ()
    sub: str = field(default_factory=lambda: str(uuid.uuid4()))


DEFAULT_USERS: dict[str, tuple[str, ...]] = {
    "alice": ("/institutions/IceCube/UW-Madison", "/posix/simprod-submit"),
    "bob": ("/institutions/IceCube/UW-Madison",),
    "admin": ("/institutions/IceCube/UW-Madison", "/tokens/IceProdAdmins"),
    "outsider": ("/institutions/Elsewhere",),
}


@dataclass
class _Session:
    sid: str
    username: str
    client_id: str
    scope: str
    active: bool = True


class IdentityProvider(DeviceFlow):
    """Issues and checks tokens. Thread-safe; time comes from ``clock`` (epoch seconds)."""

    def __init__(
        self,
        issuer: str,
        *,
        users: Mapping[str, UserSpec],
        public_client_id: str = "iceprod-public",
        service_client_id: str = "iceprod-service",
        service_client_secret: str | None = None,
        service_system: bool = True,
        service_user: str | None = None,
        token_lifetime: float = 300,
        rotate_refresh_tokens: bool = False,
        device_code_lifetime: float = 600,
        device_interval: float = 5,
        auto_approve_as: str | None = None,
        auto_approve_delay: float = 0.0,
        leeway: float = 60.0,
        audience: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if auto_approve_as is not None and auto_approve_as not in users:
            raise ValueError(f"auto_approve_as: unknown user {auto_approve_as!r}")
        if service_user is not None and service_user not in users:
            raise ValueError(f"service_user: unknown user {service_user!r}")
        self.issuer = issuer
        self.users = dict(users)
        self.public_client_id = public_client_id
        self.service_client_id = service_client_id
        self.service_client_secret = service_client_secret or secrets.token_urlsafe(24)
        self.service_system = service_system
        self.service_user = service_user
        self.token_lifetime = token_lifetime
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.device_code_lifetime = device_code_lifetime
        self.device_interval = device_interval
        self.auto_approve_as = auto_approve_as
        self.auto_approve_delay = auto_approve_delay
        self.leeway = leeway
        self.audience = audience
        self.clock = clock

        self._lock = threading.RLock()
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._public_key = self._key.public_key()
        self.kid = secrets.token_hex(8)
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self._public_key, as_dict=True)
        jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        self.jwks: dict[str, Any] = {"keys": [jwk]}
        self._sessions: dict[str, _Session] = {}
        self._refresh_tokens: dict[str, dict[str, Any]] = {}  # jti -> {"sid", "used"}
        self._device_codes: dict[str, DeviceCode] = {}
        self._validated: dict[str, dict[str, Any]] = {}
        self._live_jtis: set[str] = set()  # access tokens issued since the last expire_access_tokens()
        self._expired_jtis: set[str] = set()
        self._issued: list[str] = []  # every token signed, so tests can prove none leaked into logs

    # ---------------------------------------------------------------- endpoints (paths below the issuer)

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    @property
    def device_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/auth/device"

    @property
    def verification_uri(self) -> str:
        return f"{self.issuer}/device"

    def discovery(self) -> dict[str, Any]:
        base = f"{self.issuer}/protocol/openid-connect"
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{base}/auth",
            "token_endpoint": self.token_endpoint,
            "device_authorization_endpoint": self.device_endpoint,
            "revocation_endpoint": f"{base}/revoke",
            "jwks_uri": f"{base}/certs",
            "userinfo_endpoint": f"{base}/userinfo",
            "end_session_endpoint": f"{base}/logout",
            "grant_types_supported": ["refresh_token", "client_credentials", DEVICE_GRANT],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "profile", "offline_access"],
        }

    # ---------------------------------------------------------------- tokens

    def _sign(self, claims: dict[str, Any]) -> str:
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})
        with self._lock:
            self._issued.append(token)
        return token

    def issued_tokens(self) -> list[str]:
        """Every access and refresh token this issuer has signed, oldest first."""
        with self._lock:
            return list(self._issued)

    def _access_token(self, *, sub: str, client_id: str, sid: str, scope: str, extra: dict[str, Any]) -> str:
        now = int(self.clock())
        claims = {
            "iss": self.issuer,
            "sub": sub,
            "iat": now,
            "exp": now + int(self.token_lifetime),
            "jti": str(uuid.uuid4()),
            "typ": "Bearer",
            "azp": client_id,
            "sid": sid,
            "scope": scope,
            **extra,
        }
        if self.audience:
            claims["aud"] = self.audience
        with self._lock:
            self._live_jtis.add(claims["jti"])
        return self._sign(claims)

    def _user_token(self, session: _Session) -> str:
        user = self.users[session.username]
        extra = {"preferred_username": user.username, "groups": list(user.groups)}
        return self._access_token(
            sub=user.sub, client_id=session.client_id, sid=session.sid, scope=session.scope, extra=extra
        )

    def _refresh_token(self, session: _Session) -> str:
        now = int(self.clock())
        jti = str(uuid.uuid4())
        offline = "offline_access" in session.scope.split()
        claims = {
            "iss": self.issuer,
            "aud": self.issuer,
            "sub": self.users[session.username].sub,
            "iat": now,
            "exp": now + OFFLINE_TOKEN_LIFETIME,
            "jti": jti,
            "typ": "Offline" if offline else "Refresh",
            "azp": session.client_id,
            "sid": session.sid,
            "scope": session.scope,
        }
        self._refresh_tokens[jti] = {"sid": session.sid, "used": False}
        return self._sign(claims)

    def _token_response(self, session: _Session) -> dict[str, Any]:
        return {
            "access_token": self._user_token(session),
            "expires_in": int(self.token_lifetime),
            "refresh_expires_in": 0,
            "refresh_token": self._refresh_token(session),
            "token_type": "Bearer",
            "not-before-policy": 0,
            "session_state": session.sid,
            "scope": session.scope,
        }

    def _new_session(self, username: str, client_id: str, scope: str) -> _Session:
        session = _Session(sid=str(uuid.uuid4()), username=username, client_id=client_id, scope=scope)
        self._sessions[session.sid] = session
        return session

    def issue_refresh_token(
        self, username: str, *, client_id: str | None = None, scope: str = "openid profile offline_access"
    ) -> str:
        """A fresh offline refresh token for ``username`` (as if the device flow had just run)."""
        if username not in self.users:
            raise ValueError(f"unknown user {username!r}")
        with self._lock:
            session = self._new_session(username, client_id or self.public_client_id, scope)
            return self._refresh_token(session)

    def access_token_for(self, username: str) -> str:
        """An access token for ``username`` without any grant (for direct HTTP tests)."""
        if username not in self.users:
            raise ValueError(f"unknown user {username!r}")
        with self._lock:
            session = self._new_session(username, self.public_client_id, "openid profile")
            return self._user_token(session)

    def validate_access_token(self, token: str) -> dict[str, Any]:
        """Check a bearer token as IceProd does; raise :class:`InvalidAccessToken` if it is not good."""
        now = self.clock()
        with self._lock:
            claims = self._validated.get(token)
        if claims is None:
            try:
                header = jwt.get_unverified_header(token)
                if header.get("kid") != self.kid:
                    raise InvalidAccessToken("unknown kid")
                claims = jwt.decode(
                    token,
                    self._public_key,
                    algorithms=["RS256", "RS512"],
                    issuer=self.issuer,
                    audience=self.audience,
                    leeway=self.leeway,
                    options={"require": ["exp", "iat", "iss"], "verify_aud": bool(self.audience)},
                )
            except jwt.PyJWTError as exc:
                raise InvalidAccessToken(str(exc)) from None
            if claims.get("typ") not in (None, "Bearer"):
                raise InvalidAccessToken("not an access token")
            with self._lock:
                if len(self._validated) > 10000:
                    self._validated.clear()
                self._validated[token] = claims
        if claims["exp"] + self.leeway < now or claims.get("jti") in self._expired_jtis:
            raise InvalidAccessToken("expired")
        return claims

    def expire_access_tokens(self) -> int:
        """Make every access token issued so far fail validation, as if it had expired. Returns how many."""
        with self._lock:
            count = len(self._live_jtis)
            self._expired_jtis |= self._live_jtis
            self._live_jtis = set()
            return count

    # ---------------------------------------------------------------- revocation

    def revoke_refresh_token(self, token: str) -> bool:
        """End the session of a refresh token. Returns whether it was a live session."""
        claims = self._decode_refresh(token)
        with self._lock:
            entry = self._refresh_tokens.get(claims["jti"])
            session = self._sessions.get(entry["sid"]) if entry else None
            if session is None or not session.active:
                return False
            session.active = False
            return True

    def revoke_all(self, username: str | None = None) -> int:
        with self._lock:
            ended = 0
            for session in self._sessions.values():
                if session.active and (username is None or session.username == username):
                    session.active = False
                    ended += 1
            return ended

    def refresh_token_is_valid(self, token: str) -> bool:
        try:
            claims = self._decode_refresh(token)
        except OAuthError:
            return False
        with self._lock:
            entry = self._refresh_tokens.get(claims["jti"])
            if entry is None or (self.rotate_refresh_tokens and entry["used"]):
                return False
            session = self._sessions.get(entry["sid"])
            return bool(session and session.active)

    def revoke(self, form: Mapping[str, str], basic: tuple[str, str] | None) -> None:
        """RFC 7009: revoking a refresh token ends its session; anything else is accepted silently."""
        client_id = self._client(form, basic)
        token = form.get("token", "")
        if not token:
            raise OAuthError("invalid_request", "Token not provided")
        try:
            claims = self._decode_refresh(token)
        except OAuthError:
            return
        if claims.get("azp") != client_id:
            raise OAuthError("invalid_token", "Token was issued for another client")
        self.revoke_refresh_token(token)

    # ---------------------------------------------------------------- grants

    def _client(self, form: Mapping[str, str], basic: tuple[str, str] | None) -> str:
        """Authenticate the client (HTTP Basic or form fields); returns its id."""
        client_id = basic[0] if basic else form.get("client_id", "")
        secret = basic[1] if basic else form.get("client_secret")
        if client_id == self.public_client_id:
            return client_id
        if client_id == self.service_client_id:
            if secret is None or not hmac.compare_digest(secret, self.service_client_secret):
                raise OAuthError("unauthorized_client", "Invalid client or Invalid client credentials", 401)
            return client_id
        raise OAuthError("invalid_client", "Invalid client or Invalid client credentials", 401)

    def token(self, form: Mapping[str, str], basic: tuple[str, str] | None) -> dict[str, Any]:
        """The token endpoint. Raises :class:`OAuthError`."""
        grant_type = form.get("grant_type", "")
        client_id = self._client(form, basic)
        if grant_type == "refresh_token":
            return self._grant_refresh(form, client_id)
        if grant_type == "client_credentials":
            return self._grant_client_credentials(client_id, form.get("scope", ""))
        if grant_type == DEVICE_GRANT:
            return self._grant_device(form, client_id)
        if not grant_type:
            raise OAuthError("invalid_request", "Missing form parameter: grant_type")
        raise OAuthError("unsupported_grant_type", "Unsupported grant_type")

    def _decode_refresh(self, token: str) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token,
                self._public_key,
                algorithms=["RS256"],
                issuer=self.issuer,
                options={"verify_aud": False, "require": ["exp", "iat", "iss", "jti"]},
            )
        except jwt.PyJWTError:
            raise OAuthError("invalid_grant", "Invalid refresh token") from None
        if claims.get("typ") not in ("Offline", "Refresh"):
            raise OAuthError("invalid_grant", "Invalid refresh token")
        return claims

    def _grant_refresh(self, form: Mapping[str, str], client_id: str) -> dict[str, Any]:
        token = form.get("refresh_token", "")
        if not token:
            raise OAuthError("invalid_request", "Missing form parameter: refresh_token")
        claims = self._decode_refresh(token)
        with self._lock:
            entry = self._refresh_tokens.get(claims["jti"])
            session = self._sessions.get(entry["sid"]) if entry else None
            if entry is None or session is None:
                raise OAuthError("invalid_grant", "Invalid refresh token")
            if session.client_id != client_id:
                raise OAuthError(
                    "invalid_grant", "Invalid refresh token. Token client and authorized client don't match"
                )
            if not session.active:
                raise OAuthError("invalid_grant", "Offline user session not found")
            if session.username not in self.users:
                raise OAuthError("invalid_grant", "User not found")
            if self.rotate_refresh_tokens:
                if entry["used"]:
                    raise OAuthError("invalid_grant", "Maximum allowed refresh token reuse exceeded")
                entry["used"] = True
            return self._token_response(session)

    def _grant_client_credentials(self, client_id: str, scope: str) -> dict[str, Any]:
        if client_id != self.service_client_id:
            raise OAuthError(
                "unauthorized_client", "Public client not allowed to retrieve service account", 401
            )
        sid = str(uuid.uuid4())
        scope = " ".join(s for s in ("profile", "email", *scope.split()) if s)
        extra: dict[str, Any]
        if self.service_system:
            extra = {
                "preferred_username": f"service-account-{client_id}",
                "resource_access": {"iceprod": {"roles": ["iceprod-system"]}},
            }
            sub = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.issuer}/{client_id}"))
        else:
            user = self.users[self.service_user or "alice"]
            extra = {"preferred_username": user.username, "groups": list(user.groups)}
            sub = user.sub
        return {
            "access_token": self._access_token(
                sub=sub, client_id=client_id, sid=sid, scope=scope, extra=extra
            ),
            "expires_in": int(self.token_lifetime),
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            "not-before-policy": 0,
            "scope": scope,
        }


def make_users(
    overrides: Mapping[str, Sequence[str] | UserSpec] | None = None,
) -> dict[str, UserSpec]:
    """The default users plus ``overrides`` (username -> groups, or a :class:`UserSpec`)."""
    users = {name: UserSpec(name, groups) for name, groups in DEFAULT_USERS.items()}
    for name, spec in (overrides or {}).items():
        users[name] = spec if isinstance(spec, UserSpec) else UserSpec(name, tuple(spec))
    return users
