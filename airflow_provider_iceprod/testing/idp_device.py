"""The RFC 8628 device flow (with PKCE S256) of the stand-in's identity provider.

A base of :class:`~airflow_provider_iceprod.testing.idp.IdentityProvider`, which holds the state
(``_device_codes`` under ``_lock``) and issues the tokens once a code is approved.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_iceprod.testing.oauth import OAuthError

if TYPE_CHECKING:
    from airflow_provider_iceprod.testing.idp import UserSpec, _Session

_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"


@dataclass
class DeviceCode:
    device_code: str
    user_code: str
    client_id: str
    scope: str
    challenge: str | None
    expires_at: float
    interval: float
    last_poll: float
    username: str | None = None
    approve_at: float | None = None
    denied: bool = False
    used: bool = False


class DeviceFlow:
    """Device authorization, the approval page's decision, and the ``device_code`` grant."""

    public_client_id: str
    users: dict[str, UserSpec]
    device_code_lifetime: float
    device_interval: float
    auto_approve_as: str | None
    auto_approve_delay: float
    clock: Callable[[], float]
    _lock: threading.RLock
    _device_codes: dict[str, DeviceCode]

    if TYPE_CHECKING:

        @property
        def verification_uri(self) -> str: ...

        def _client(self, form: Mapping[str, str], basic: tuple[str, str] | None) -> str: ...

        def _new_session(self, username: str, client_id: str, scope: str) -> _Session: ...

        def _token_response(self, session: _Session) -> dict[str, Any]: ...

    def device_authorize(self, form: Mapping[str, str], basic: tuple[str, str] | None) -> dict[str, Any]:
        client_id = self._client(form, basic)
        challenge = form.get("code_challenge") or None
        method = form.get("code_challenge_method") or None
        if client_id == self.public_client_id and challenge is None:
            raise OAuthError("invalid_request", "Missing parameter: code_challenge")
        if challenge is not None and method != "S256":
            raise OAuthError("invalid_request", "Invalid parameter: code_challenge_method")
        now = self.clock()
        code = DeviceCode(
            device_code=secrets.token_urlsafe(32),
            user_code=self._user_code(),
            client_id=client_id,
            scope=" ".join(dict.fromkeys(["openid", *form.get("scope", "").split()])),
            challenge=challenge,
            expires_at=now + self.device_code_lifetime,
            interval=self.device_interval,
            last_poll=now,
        )
        if self.auto_approve_as is not None:
            code.username = self.auto_approve_as
            code.approve_at = now + self.auto_approve_delay
        with self._lock:
            self._device_codes[code.device_code] = code
        return {
            "device_code": code.device_code,
            "user_code": code.user_code,
            "verification_uri": self.verification_uri,
            "verification_uri_complete": f"{self.verification_uri}?user_code={code.user_code}",
            "expires_in": int(self.device_code_lifetime),
            "interval": int(self.device_interval)
            if float(self.device_interval).is_integer()
            else self.device_interval,
        }

    def _user_code(self) -> str:
        letters = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(8))
        return f"{letters[:4]}-{letters[4:]}"

    def find_user_code(self, user_code: str) -> DeviceCode | None:
        wanted = user_code.strip().upper().replace(" ", "")
        if len(wanted) == 8:
            wanted = f"{wanted[:4]}-{wanted[4:]}"
        with self._lock:
            for code in self._device_codes.values():
                if code.user_code == wanted and not code.used and code.expires_at > self.clock():
                    return code
        return None

    def decide(self, user_code: str, *, username: str | None, approve: bool) -> str:
        """The approval page's button: approve as ``username`` or deny. Returns a message for the page."""
        code = self.find_user_code(user_code)
        if code is None:
            raise OAuthError("invalid_grant", "Unknown or expired code")
        with self._lock:
            if code.username is not None or code.denied:
                raise OAuthError("invalid_grant", "This code was already used")
            if not approve:
                code.denied = True
                return "Access denied. You can close this window."
            if username not in self.users:
                raise OAuthError("invalid_request", f"Unknown user {username!r}")
            code.username = username
            code.approve_at = self.clock()
            return f"Device approved as {username}. You can close this window."

    def _grant_device(self, form: Mapping[str, str], client_id: str) -> dict[str, Any]:
        device_code = form.get("device_code", "")
        if not device_code:
            raise OAuthError("invalid_request", "Missing parameter: device_code")
        now = self.clock()
        with self._lock:
            code = self._device_codes.get(device_code)
            if code is None or code.used or code.client_id != client_id:
                raise OAuthError("invalid_grant", "Device code not valid")
            if now >= code.expires_at:
                raise OAuthError("expired_token", "Device code is expired")
            if now - code.last_poll < code.interval - 0.05:
                code.last_poll = now
                code.interval += 5
                raise OAuthError("slow_down", "Slow down")
            code.last_poll = now
            if code.denied:
                raise OAuthError("access_denied", "The end user denied the authorization request")
            if code.username is None or code.approve_at is None or now < code.approve_at:
                raise OAuthError("authorization_pending", "The authorization request is still pending")
            if code.challenge is not None and not _pkce_ok(form.get("code_verifier", ""), code.challenge):
                raise OAuthError("invalid_grant", "PKCE verification failed: Invalid code verifier")
            code.used = True
            session = self._new_session(code.username, client_id, code.scope)
            return self._token_response(session)


def _pkce_ok(verifier: str, challenge: str) -> bool:
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return bool(verifier) and hmac.compare_digest(expected, challenge)
