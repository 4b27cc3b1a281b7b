"""The OAuth device authorization grant (RFC 8628, with PKCE S256), used only by the CLI's login.

A base of :class:`~airflow_provider_iceprod.auth.oidc.OIDCClient`, which brings discovery, the
transport and the error mapping.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_iceprod.auth.tokens import GrantResult, login_command
from airflow_provider_iceprod.exceptions import (
    IceProdAuthError,
    IceProdConfigError,
    IceProdError,
    IceProdRequestError,
)

if TYPE_CHECKING:
    from airflow_provider_iceprod.auth.oidc import ProviderMetadata
    from airflow_provider_iceprod.transport import Transport

DEVICE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass(frozen=True)
class DeviceAuthorization:
    """A pending device login. ``device_code`` and ``code_verifier`` are secrets (hidden from repr)."""

    device_code: str = field(repr=False)
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float
    code_verifier: str = field(repr=False)
    started_at: float = 0.0  # time.monotonic() when the code was issued


def pkce_pair() -> tuple[str, str]:
    """A PKCE ``(code_verifier, code_challenge)`` pair for method S256 (RFC 7636)."""
    verifier = secrets.token_urlsafe(64)[:96]
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
    return verifier, challenge


def oauth_error(exc: IceProdError) -> tuple[str, str]:
    """``(error, error_description)`` from an OAuth error body, or ``("", message)``."""
    body = exc.body
    if isinstance(body, Mapping):
        return str(body.get("error") or ""), str(body.get("error_description") or body.get("error") or "")
    return "", str(exc.iceprod_message or exc.message)


class DeviceGrant:
    """Start a device login and poll for its tokens."""

    issuer: str
    conn_id: str

    if TYPE_CHECKING:

        def discover(self) -> ProviderMetadata: ...

        def _route(self, url: str) -> tuple[Transport, str]: ...

        def _client_form(self) -> dict[str, str]: ...

        def _grant_error(self, exc: IceProdError, what: str) -> IceProdError: ...

        def _parse_grant(
            self, doc: Any, what: str, *, need_access: bool, need_refresh: bool
        ) -> GrantResult: ...

    def start_device_authorization(self, scope: str = "offline_access") -> DeviceAuthorization:
        """Ask the issuer for a device code and user code (RFC 8628 section 3.1, with PKCE S256)."""
        meta = self.discover()
        if not meta.device_authorization_endpoint:
            raise IceProdConfigError(
                f"IceProd connection {self.conn_id!r}: the issuer {self.issuer} does not offer the device "
                "authorization grant (no device_authorization_endpoint in its discovery document). "
                "Check the oauth_url extra.",
                field="oauth_url",
            )
        verifier, challenge = pkce_pair()
        scopes = scope.split()
        if "offline_access" not in scopes:
            scopes.insert(0, "offline_access")
        form = {
            **self._client_form(),
            "scope": " ".join(scopes),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
        transport, path = self._route(meta.device_authorization_endpoint)
        try:
            doc = transport.request("POST", path, form=form, idempotent=True)
        except IceProdError as exc:
            raise self._grant_error(exc, "the device authorization request") from None
        if not isinstance(doc, Mapping) or not doc.get("device_code") or not doc.get("user_code"):
            raise IceProdAuthError(
                f"IceProd connection {self.conn_id!r}: {self.issuer} returned an incomplete device "
                "authorization (no device_code or user_code)."
            )
        uri = doc.get("verification_uri") or doc.get("verification_url") or ""
        return DeviceAuthorization(
            device_code=str(doc["device_code"]),
            user_code=str(doc["user_code"]),
            verification_uri=str(uri),
            verification_uri_complete=(
                str(doc["verification_uri_complete"]) if doc.get("verification_uri_complete") else None
            ),
            expires_in=float(doc.get("expires_in") or 600),
            interval=float(doc["interval"]) if doc.get("interval") is not None else 5.0,
            code_verifier=verifier,
            started_at=time.monotonic(),
        )

    def poll_device_token(
        self,
        auth: DeviceAuthorization,
        *,
        on_tick: Callable[[float], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> GrantResult:
        """Poll the token endpoint until the person approves, denies, or the code expires.

        Honours ``interval`` and ``slow_down`` (+5 s); never waits past ``expires_in``. ``on_tick`` gets
        the seconds left about once a second (for a countdown).
        """
        meta = self.discover()
        transport, path = self._route(meta.token_endpoint)
        form = {
            "grant_type": DEVICE_GRANT_TYPE,
            "device_code": auth.device_code,
            "code_verifier": auth.code_verifier,
            **self._client_form(),
        }
        deadline = auth.started_at + auth.expires_in if auth.started_at else clock() + auth.expires_in
        interval = max(auth.interval, 0.0)
        while True:
            self._wait(interval, deadline, on_tick, sleep, clock)
            if clock() >= deadline:
                raise self._expired()
            try:
                doc = transport.request("POST", path, form=form, idempotent=True)
            except IceProdRequestError as exc:
                code, description = oauth_error(exc)
                if code == "authorization_pending":
                    continue
                if code == "slow_down":
                    interval += 5.0
                    continue
                if code == "expired_token":
                    raise self._expired() from None
                if code == "access_denied":
                    raise IceProdAuthError(
                        f"IceProd connection {self.conn_id!r}: the login was denied at {self.issuer}. "
                        f"Run `{login_command(self.conn_id)}` to try again.",
                        iceprod_message=description,
                    ) from None
                raise self._grant_error(exc, "the device grant") from None
            except IceProdError as exc:
                raise self._grant_error(exc, "the device grant") from None
            return self._parse_grant(doc, "the device grant", need_access=False, need_refresh=True)

    def _expired(self) -> IceProdAuthError:
        return IceProdAuthError(
            f"IceProd connection {self.conn_id!r}: the device code expired before the login was approved. "
            f"Run `{login_command(self.conn_id)}` again and approve it in time."
        )

    @staticmethod
    def _wait(
        seconds: float,
        deadline: float,
        on_tick: Callable[[float], None] | None,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
    ) -> None:
        end = min(clock() + seconds, deadline)
        while True:
            now = clock()
            if on_tick is not None:
                on_tick(max(deadline - now, 0.0))
            if now >= end:
                return
            sleep(min(1.0, end - now))
