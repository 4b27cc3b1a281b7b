"""IceProd's own client (rest-tools' ``RestClient``) logged in through the Airflow connection.

``IceProdHook.get_conn()`` returns :class:`ConnectionRestClient`: a ``rest_tools.client.RestClient``
for the connection's API URL whose bearer token comes from the provider's token machinery
(:class:`~airflow_provider_iceprod.auth.provider.TokenProvider`: the process-wide cache, the refresh
lock, rotation, the overlay). rest-tools never refreshes, caches or stores a token itself: every request
asks the provider (a dictionary look-up while the token is fresh).

Retries: each HTTP request is retried by rest-tools' own ``urllib3`` policy (connection errors and
408/429/5xx, every method, ``retry_limit`` times with ``retry_delay`` as the backoff factor, ``timeout``
per attempt), as in IceProd's own scripts. The token is fetched once per request, before rest-tools'
retries, so token-endpoint retries (the provider's, see :mod:`~airflow_provider_iceprod.auth.oidc`) and
request retries never multiply. One "403 authentication failed" re-fetches the token and re-sends once.
For calls that must not be re-sent blindly (submitting a dataset), use the hook's methods or
``hook.run``: they go through the provider's transport and its idempotency rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rest_tools.client import RestClient

if TYPE_CHECKING:
    from airflow_provider_iceprod.auth.provider import TokenProvider
    from airflow_provider_iceprod.retry import RetrySettings

#: IceProd's answer to an expired or unknown token (see transport.EXPIRED_TOKEN_ERROR).
_AUTH_FAILED = "authentication failed"


def _auth_failed(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    if response is None or response.status_code != 403:
        return False
    try:
        return _AUTH_FAILED in str(response.json().get("error", ""))
    except ValueError:
        return False


class ConnectionRestClient(RestClient):
    """A ``RestClient`` whose token is always the provider's current one (see the module docs)."""

    def __init__(self, address: str, provider: TokenProvider, retry: RetrySettings) -> None:
        self._provider = provider
        super().__init__(
            address,
            token=provider.get_token,
            timeout=retry.timeout,
            retries=retry.retry_limit,
            backoff_factor=retry.retry_delay,
        )

    def __repr__(self) -> str:
        return f"ConnectionRestClient({self.address!r}, {self._provider!r})"

    def _get_token(self) -> None:
        # Replaces rest-tools' own expiry check and caching: the provider decides, every time.
        self.access_token = self._provider.get_token()

    def request_seq(self, method: str, path: str, args: Any = None, headers: Any = None) -> Any:
        from requests.exceptions import HTTPError

        try:
            return super().request_seq(method, path, args, headers)
        except HTTPError as exc:
            if not _auth_failed(exc):
                raise
            self._provider.invalidate()
            return super().request_seq(method, path, args, headers)

    async def request(self, method: str, path: str, args: Any = None, headers: Any = None) -> Any:
        from requests.exceptions import HTTPError

        # Refresh (if needed) without blocking the event loop; rest-tools then reads the fresh token
        # from the provider's cache synchronously, with no I/O.
        await self._provider.aget_token()
        try:
            return await super().request(method, path, args, headers)
        except HTTPError as exc:
            if not _auth_failed(exc):
                raise
            self._provider.invalidate()
            await self._provider.aget_token()
            return await super().request(method, path, args, headers)
