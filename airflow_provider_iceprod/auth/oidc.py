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

The ``refresh_token`` grant is the exception to "retry 5xx": with single-use refresh tokens (Keycloak's
"Revoke Refresh Token" on, "Refresh Token Max Reuse" 0) a grant whose answer was lost (a 502, a reset
connection, a reply slower than the timeout) may already have spent the token, and re-sending it would
end the login. So it is sent as non-idempotent (re-sent only when it surely never reached the issuer),
with its own longer timeout (:data:`TOKEN_TIMEOUT`), and a lost answer raises
:class:`IceProdAmbiguousError` saying so. Keycloak's "Refresh Token Max Reuse" >= 1 makes a re-send safe.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_iceprod.auth.device import DeviceGrant, oauth_error
from airflow_provider_iceprod.auth.tokens import AccessToken, GrantResult, login_command
from airflow_provider_iceprod.exceptions import (
    IceProdAmbiguousError,
    IceProdAuthError,
    IceProdConfigError,
    IceProdError,
    IceProdTransientError,
)
from airflow_provider_iceprod.loop_guard import refuse_running_loop

if TYPE_CHECKING:
    from airflow_provider_iceprod.retry import RetrySettings
    from airflow_provider_iceprod.transport import Transport

log = logging.getLogger(__name__)

#: Seconds to wait for the token endpoint (at least; longer when the hook's timeout is longer). A reply
#: that is slow but arrives is worth waiting for: a refresh whose answer is lost may cost the login.
TOKEN_TIMEOUT = 60.0
DISCOVERY_PATH = "/.well-known/openid-configuration"


@dataclass(frozen=True)
class ProviderMetadata:
    """The parts of an issuer's discovery document the provider uses."""

    issuer: str
    token_endpoint: str
    device_authorization_endpoint: str | None = None
    revocation_endpoint: str | None = None


_discovery_cache: dict[str, ProviderMetadata] = {}
_discovery_lock = threading.Lock()


def clear_discovery_cache() -> None:
    """Forget every discovery document (tests, or after an issuer moved)."""
    with _discovery_lock:
        _discovery_cache.clear()


def _final(new: IceProdError, old: IceProdError) -> IceProdError:
    """Carry the transport's "retries already spent" mark, so no outer transport retries again."""
    new.attempts = getattr(old, "attempts", 1)  # type: ignore[attr-defined]
    return new


class OIDCClient(DeviceGrant):
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
        token_timeout: float | None = None,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.retry = retry
        self.token_timeout = max(retry.timeout, TOKEN_TIMEOUT if token_timeout is None else token_timeout)
        self._client_secret = client_secret
        self.conn_id = conn_id
        self._transport: Transport | None = None
        self._token_transport: Transport | None = None

    def __repr__(self) -> str:
        return f"OIDCClient(issuer={self.issuer!r}, client_id={self.client_id!r}, conn_id={self.conn_id!r})"

    # -- plumbing ---------------------------------------------------------------------------------

    def _route(self, url: str) -> tuple[Transport, str]:
        """The transport to the issuer and the (absolute) URL to send: endpoints come from discovery."""
        if self._transport is None:
            from airflow_provider_iceprod.transport import Transport

            self._transport = Transport(self.issuer, auth=None, retry=self.retry, service="OIDC")
        return self._transport, url

    def _token_route(self, url: str) -> tuple[Transport, str]:
        """The transport to the token endpoint: same retries, its own longer timeout."""
        if self._token_transport is None:
            from dataclasses import replace

            from airflow_provider_iceprod.transport import Transport

            retry = replace(self.retry, timeout=self.token_timeout)
            self._token_transport = Transport(self.issuer, auth=None, retry=retry, service="OIDC")
        return self._token_transport, url

    def _client_form(self) -> dict[str, str]:
        form = {"client_id": self.client_id}
        if self._client_secret:
            form["client_secret"] = self._client_secret
        return form

    def _login_hint(self) -> str:
        return f"Run `{login_command(self.conn_id)}` to log in again."

    def _grant_error(self, exc: IceProdError, what: str) -> IceProdError:
        """Turn a failed token-endpoint call into the provider's error (never includes a token)."""
        if isinstance(exc, IceProdAmbiguousError):
            return _final(
                IceProdAmbiguousError(
                    f"IceProd connection {self.conn_id!r}: the answer of {self.issuer} to {what} was lost "
                    f"({exc.message}). It was not re-sent: with single-use refresh tokens the issuer may "
                    "already have spent this one and issued a new one that never arrived. The next attempt "
                    "retries; if it then fails with invalid_grant, log in again. Keycloak's \"Refresh Token "
                    'Max Reuse" >= 1 (realm settings, Tokens) makes such a re-send safe.',
                    status_code=exc.status_code,
                    body=exc.body,
                    iceprod_message=exc.iceprod_message,
                ),
                exc,
            )
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
        code, description = oauth_error(exc)
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
                    f"connection's oauth_url) could not be reached for its discovery document {url} ({detail}). "
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

    def _token_call(
        self, form: dict[str, str], what: str, *, need_refresh: bool = False, idempotent: bool = True
    ) -> GrantResult:
        meta = self.discover()
        transport, path = self._token_route(meta.token_endpoint)
        try:
            doc = transport.request("POST", path, form=form, idempotent=idempotent)
        except IceProdError as exc:
            raise self._grant_error(exc, what) from None
        return self._parse_grant(doc, what, need_access=True, need_refresh=need_refresh)

    async def _atoken_call(self, form: dict[str, str], what: str, *, idempotent: bool = True) -> GrantResult:
        meta = await self.adiscover()
        transport, path = self._token_route(meta.token_endpoint)
        try:
            doc = await transport.arequest("POST", path, form=form, idempotent=idempotent)
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
        form = self._refresh_form(refresh_token)
        return self._token_call(form, "the refresh_token grant", idempotent=False)

    async def arefresh(self, refresh_token: str) -> GrantResult:
        form = self._refresh_form(refresh_token)
        return await self._atoken_call(form, "the refresh_token grant", idempotent=False)

    def client_credentials(self) -> GrantResult:
        """``client_credentials`` grant with the secret from the connection's password."""
        return self._token_call(self._cc_form(), "the client_credentials grant")

    async def aclient_credentials(self) -> GrantResult:
        return await self._atoken_call(self._cc_form(), "the client_credentials grant")

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
