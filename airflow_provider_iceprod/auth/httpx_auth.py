"""``IceProdAuth``: bearer tokens for httpx, with one refresh when IceProd says the token expired.

IceProd answers ``403 authentication failed`` for a missing, invalid or expired token (never 401).
The auth flow then asks the token source for a fresh token once and re-sends once; any other 403,
and a second ``authentication failed``, is the final answer. See ``docs/architecture.md``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, Generator
from typing import Protocol, runtime_checkable

import httpx

from airflow_provider_iceprod.transport import EXPIRED_TOKEN_ERROR

log = logging.getLogger(__name__)


@runtime_checkable
class BearerSource(Protocol):
    """Where bearer tokens come from (``auth.provider.TokenProvider``, :class:`StaticBearer`)."""

    def get_token(self, *, force_refresh: bool = False) -> str: ...

    async def aget_token(self, *, force_refresh: bool = False) -> str: ...


class StaticBearer:
    """A fixed access token (the CLI's Airflow API token, benchmarks, tests). It cannot be refreshed."""

    def __init__(self, token: str) -> None:
        from airflow.sdk.log import mask_secret

        mask_secret(token)
        self._token = token

    def __repr__(self) -> str:
        return "StaticBearer(***)"

    def get_token(self, *, force_refresh: bool = False) -> str:
        return self._token

    async def aget_token(self, *, force_refresh: bool = False) -> str:
        return self._token


def token_expired(response: httpx.Response) -> bool:
    """Is this IceProd's ``403 authentication failed``?"""
    if response.status_code != 403 or not response.content:
        return False
    try:
        body = json.loads(response.content)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("error") == EXPIRED_TOKEN_ERROR


class IceProdAuth(httpx.Auth):
    """Bearer authentication from a :class:`BearerSource`, refreshing once on an expired token."""

    def __init__(self, tokens: BearerSource, *, service: str = "IceProd") -> None:
        self.tokens = tokens
        self.service = service

    def __repr__(self) -> str:
        return f"IceProdAuth({self.tokens!r})"

    def _refreshing(self, request: httpx.Request) -> None:
        log.warning(
            "%s rejected the access token for %s %s (403 %s); refreshing it once and re-sending",
            self.service,
            request.method,
            request.url.path,
            EXPIRED_TOKEN_ERROR,
        )

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.tokens.get_token()}"
        response = yield request
        if response.status_code == 403:
            response.read()  # only a 403's body is read here; others stream on to the caller
        if token_expired(response):
            self._refreshing(request)
            request.headers["Authorization"] = f"Bearer {self.tokens.get_token(force_refresh=True)}"
            yield request

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"Bearer {await self.tokens.aget_token()}"
        response = yield request
        if response.status_code == 403:
            await response.aread()
        if token_expired(response):
            self._refreshing(request)
            request.headers["Authorization"] = f"Bearer {await self.tokens.aget_token(force_refresh=True)}"
            yield request
