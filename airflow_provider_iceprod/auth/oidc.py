"""OpenID Connect client: discovery and the grants the provider uses.

* discovery (cached per process per issuer; a 404 or a document that is not one is an
  :class:`~airflow_provider_iceprod.exceptions.IceProdConfigError` naming ``oauth_url``; an issuer that
  does not answer, drops the connection or answers 5xx is an ``IceProdTransientError``),
* ``refresh_token`` and ``client_credentials`` grants (sync and async),
* the device authorization grant (RFC 8628) with PKCE S256 and ``offline_access`` (CLI only: it waits
  for a person),
* token revocation (RFC 7009) when the issuer advertises it.

Every HTTP call goes through :class:`airflow_provider_iceprod.transport.Transport` (one HTTP path, one
retry policy: 5xx and connection errors are retried, 4xx such as ``invalid_grant`` never). Responses
are parsed here; callers register the returned tokens with the secret masker.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_iceprod.auth.tokens import AccessToken, GrantResult, login_command
from airflow_provider_iceprod.exceptions import (
    IceProdAuthError,
    IceProdConfigError,
    IceProdError,
    IceProdRequestError,
    IceProdTransientError,
)
from airflow_provider_iceprod.loop_guard import refuse_running_loop

if TYPE_CHECKING:
    from airflow_provider_iceprod.retry import RetrySettings
    from airflow_provider_iceprod.transport import Transport

log = logging.getLogger(__name__)

DEVICE_GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
DISCOVERY_PATH = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class ProviderMetadata:
    """The parts of an issuer's discovery document the provider uses."""

    issuer: str
    token_endpoint: str
    device_authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None


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


_discovery_cache: dict[str, ProviderMetadata] = {}
_discovery_lock = threading.Lock()


def clear_discovery_cache() -> None:
    """Forget every discovery document (tests, or after an issuer moved)."""
    with _discovery_lock:
        _discovery_cache.clear()


def pkce_pair() -> tuple[str, str]:
    """A PKCE ``(code_verifier, code_challenge)`` pair for method S256 (RFC 7636)."""
    verifier = secrets.token_urlsafe(64)[:96]
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    challenge = base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
    return verifier, challenge


def _final(new: IceProdError, old: IceProdError) -> IceProdError:
    """Carry the transport's "retries already spent" mark, so no outer transport retries again."""
    new.attempts = getattr(old, "attempts", 1)  # type: ignore[attr-defined]
    return new


def _error_code(exc: IceProdError) -> tuple[str, str]:
    """``(error, error_description)`` from an OAuth error body, or ``("", message)``."""
    body = exc.body
    if isinstance(body, Mapping):
        return str(body.get("error") or ""), str(body.get("error_description") or body.get("error") or "")
    return "", str(exc.iceprod_message or exc.message)


class OIDCClient:
    """Talks to one issuer for one client. Cheap to build: no I/O until a method is called.

    ``conn_id`` only makes error messages name the right connection and login command.
    """

    def __init__(
        self,
        issuer: str,
        client_id: str,
        *,
        retry: RetrySettings,
        client_secret: str | None = None,
        conn_id: str = "iceprod_default",
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.retry = retry
        self._client_secret = client_secret
        self.conn_id = conn_id
        self._transport: Transport | None = None

    def __repr__(self) -> str:
        return f"OIDCClient(issuer={self.issuer!r}, client_id={self.client_id!r}, conn_id={self.conn_id!r})"

    # -- plumbing ---------------------------------------------------------------------------------

    def _route(self, url: str) -> tuple[Transport, str]:
        """The transport to the issuer and the (absolute) URL to send: endpoints come from discovery."""
        if self._transport is None:
            from airflow_provider_iceprod.transport import Transport

            self._transport = Transport(self.issuer, auth=None, retry=self.retry, service="OIDC")
        return self._transport, url

    def _client_form(self) -> dict[str, str]:
        form = {"client_id": self.client_id}
        if self._client_secret:
            form["client_secret"] = self._client_secret
        return form

    def _login_hint(self) -> str:
        return f"Run `{login_command(self.conn_id)}` to log in again."

    def _grant_error(self, exc: IceProdError, what: str) -> IceProdError:
        """Turn a failed token-endpoint call into the provider's error (never includes a token)."""
        if isinstance(exc, IceProdTransientError):
            return _final(
                IceProdTransientError(
                    f"IceProd connection {self.conn_id!r}: the token endpoint of {self.issuer} kept failing "
                    f"during {what} ({exc.message}). The issuer may be down; try again later.",
                    status_code=exc.status_code,
                    body=exc.body,
                    iceprod_message=exc.iceprod_message,
                    retry_after=exc.retry_after,
                ),
                exc,
            )
        code, description = _error_code(exc)
        if code == "invalid_grant":
            message = (
                f"IceProd connection {self.conn_id!r}: {self.issuer} rejected the refresh token "
                f"(invalid_grant: {description}). It expired, was revoked or was already used. "
                + self._login_hint()
            )
        elif code in ("invalid_client", "unauthorized_client"):
            message = (
                f"IceProd connection {self.conn_id!r}: {self.issuer} rejected client {self.client_id!r} "
                f"({code}: {description}). Check the connection's client_id extra and, for service "
                "accounts, the password field (the client secret)."
            )
        else:
            message = (
                f"IceProd connection {self.conn_id!r}: {what} at {self.issuer} failed "
                f"({code or exc.status_code}: {description}). " + self._login_hint()
            )
        return IceProdAuthError(
            message,
            status_code=exc.status_code,
            iceprod_message=description,
            body={"error": code, "error_description": description} if code else None,
        )

    def _discovery_error(self, exc: Exception | None, detail: str) -> IceProdError:
        url = self.issuer + DISCOVERY_PATH
        if isinstance(exc, IceProdTransientError):
            # No answer, a dropped connection or a 5xx/429 after our retries: the issuer is down or
            # unreachable for now, the URL is not known to be wrong. Retryable, never a config error.
            return _final(
                IceProdTransientError(
                    f"IceProd connection {self.conn_id!r}: the OpenID issuer at {self.issuer} (the "
                    f"connection's oauth_url) could not be reached for its discovery document ({detail}). "
                    "It may be down or restarting; try again later.",
                    status_code=exc.status_code,
                    retry_after=exc.retry_after,
                ),
                exc,
            )
        return IceProdConfigError(
            f"IceProd connection {self.conn_id!r}: could not read the OpenID discovery document at {url} "
            f"({detail}). Check the connection's oauth_url extra: it must be the issuer (Keycloak realm) "
            "URL, e.g. https://keycloak.icecube.wisc.edu/auth/realms/IceCube.",
            field="oauth_url",
        )

    def _parse_discovery(self, doc: Any) -> ProviderMetadata:
        if not isinstance(doc, Mapping):
            raise self._discovery_error(None, "the answer is not a JSON object")
        token_endpoint = doc.get("token_endpoint")
        if not isinstance(token_endpoint, str) or "://" not in token_endpoint:
            raise self._discovery_error(None, "it has no token_endpoint")

        def url(name: str) -> str | None:
            value = doc.get(name)
            return value if isinstance(value, str) and "://" in value else None

        return ProviderMetadata(
            issuer=str(doc.get("issuer") or self.issuer),
            token_endpoint=token_endpoint,
            device_authorization_endpoint=url("device_authorization_endpoint"),
            revocation_endpoint=url("revocation_endpoint"),
        )

    # -- discovery --------------------------------------------------------------------------------

    def discover(self) -> ProviderMetadata:
        """The issuer's metadata, fetched once per process (failures are not cached)."""
        refuse_running_loop("OIDCClient.discover()")  # before anything that would wrap its error
        cached = _discovery_cache.get(self.issuer)
        if cached is not None:
            return cached
        with _discovery_lock:
            cached = _discovery_cache.get(self.issuer)
            if cached is not None:
                return cached
            transport, path = self._route(self.issuer + DISCOVERY_PATH)
            try:
                doc = transport.request("GET", path, idempotent=True)
            except IceProdError as exc:
                raise self._discovery_error(exc, exc.message) from None
            except ValueError as exc:  # a body that is not JSON
                raise self._discovery_error(exc, f"not JSON: {exc}") from None
            meta = self._parse_discovery(doc)
            _discovery_cache[self.issuer] = meta
            return meta

    async def adiscover(self) -> ProviderMetadata:
        cached = _discovery_cache.get(self.issuer)
        if cached is not None:
            return cached
        transport, path = self._route(self.issuer + DISCOVERY_PATH)
        try:
            doc = await transport.arequest("GET", path, idempotent=True)
        except IceProdError as exc:
            raise self._discovery_error(exc, exc.message) from None
        except ValueError as exc:
            raise self._discovery_error(exc, f"not JSON: {exc}") from None
        meta = self._parse_discovery(doc)
        _discovery_cache[self.issuer] = meta
        return meta

    # -- token endpoint ---------------------------------------------------------------------------

    def _parse_grant(self, doc: Any, what: str, *, need_access: bool, need_refresh: bool) -> GrantResult:
        if not isinstance(doc, Mapping):
            raise IceProdAuthError(
                f"IceProd connection {self.conn_id!r}: {self.issuer} answered {what} with something that is "
                "not a JSON object."
            )
        access = doc.get("access_token")
        refresh = doc.get("refresh_token")
        if need_access and not access:
            raise IceProdAuthError(
                f"IceProd connection {self.conn_id!r}: {self.issuer} returned no access_token for {what}."
            )
        if need_refresh and not refresh:
            raise IceProdAuthError(
                f"IceProd connection {self.conn_id!r}: {self.issuer} returned no refresh token for {what}. "
                f"Client {self.client_id!r} must allow the offline_access scope."
            )
        refresh_expires = doc.get("refresh_expires_in")
        return GrantResult(
            access_token=AccessToken.from_response(str(access), doc.get("expires_in")) if access else None,
            refresh_token=str(refresh) if refresh else None,
            refresh_expires_in=float(refresh_expires) if isinstance(refresh_expires, int | float) else None,
            scope=str(doc.get("scope") or ""),
        )

    def _token_call(self, form: dict[str, str], what: str, *, need_refresh: bool = False) -> GrantResult:
        meta = self.discover()
        transport, path = self._route(meta.token_endpoint)
        try:
            doc = transport.request("POST", path, form=form, idempotent=True)
        except IceProdError as exc:
            raise self._grant_error(exc, what) from None
        return self._parse_grant(doc, what, need_access=True, need_refresh=need_refresh)

    async def _atoken_call(self, form: dict[str, str], what: str) -> GrantResult:
        meta = await self.adiscover()
        transport, path = self._route(meta.token_endpoint)
        try:
            doc = await transport.arequest("POST", path, form=form, idempotent=True)
        except IceProdError as exc:
            raise self._grant_error(exc, what) from None
        return self._parse_grant(doc, what, need_access=True, need_refresh=False)

    def _refresh_form(self, refresh_token: str) -> dict[str, str]:
        return {"grant_type": "refresh_token", "refresh_token": refresh_token, **self._client_form()}

    def _cc_form(self) -> dict[str, str]:
        if not self._client_secret:
            raise IceProdConfigError(
                f"IceProd connection {self.conn_id!r}: the client-credentials grant needs the client secret "
                "in the connection's password field.",
                field="password",
            )
        return {"grant_type": "client_credentials", **self._client_form()}

    def refresh(self, refresh_token: str) -> GrantResult:
        """``refresh_token`` grant; ``invalid_grant`` -> :class:`IceProdAuthError` naming the login."""
        return self._token_call(self._refresh_form(refresh_token), "the refresh_token grant")

    async def arefresh(self, refresh_token: str) -> GrantResult:
        return await self._atoken_call(self._refresh_form(refresh_token), "the refresh_token grant")

    def client_credentials(self) -> GrantResult:
        """``client_credentials`` grant with the secret from the connection's password."""
        return self._token_call(self._cc_form(), "the client_credentials grant")

    async def aclient_credentials(self) -> GrantResult:
        return await self._atoken_call(self._cc_form(), "the client_credentials grant")

    # -- device authorization (CLI only) ----------------------------------------------------------

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
                code, description = _error_code(exc)
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

    # -- revocation -------------------------------------------------------------------------------

    def revoke(self, token: str, token_type_hint: str = "refresh_token") -> bool:
        """Revoke ``token`` (RFC 7009). False when the issuer has no revocation endpoint."""
        meta = self.discover()
        if not meta.revocation_endpoint:
            return False
        transport, path = self._route(meta.revocation_endpoint)
        form = {"token": token, "token_type_hint": token_type_hint, **self._client_form()}
        try:
            transport.request("POST", path, form=form, idempotent=True)
        except IceProdError as exc:
            raise self._grant_error(exc, "token revocation") from None
        return True
