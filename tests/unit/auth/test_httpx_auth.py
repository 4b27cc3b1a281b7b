"""``auth.httpx_auth``: IceProdAuth over real HTTP, and (issue 13 #8) no secret in any ``repr``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import httpx
import pytest

from airflow_provider_iceprod.auth.httpx_auth import IceProdAuth, StaticBearer
from airflow_provider_iceprod.exceptions import IceProdError, IceProdPermissionError
from airflow_provider_iceprod.retry import RetrySettings
from airflow_provider_iceprod.transport import Transport

FAST = RetrySettings(retry_limit=0, retry_delay=0.01, timeout=5)


class CountingBearer:
    """A token source that hands out the tokens it was given, in order, and counts refreshes."""

    def __init__(self, *tokens: str) -> None:
        self.tokens = list(tokens)
        self.refreshes = 0

    def get_token(self, *, force_refresh: bool = False) -> str:
        if force_refresh:
            self.refreshes += 1
            self.tokens.pop(0)
        return self.tokens[0]

    async def aget_token(self, *, force_refresh: bool = False) -> str:
        return self.get_token(force_refresh=force_refresh)


@pytest.fixture
def ip(iceprod_server, monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator:
    monkeypatch.setenv("AIRFLOW_ICEPROD_LOCK_DIR", str(tmp_path / "locks"))
    yield iceprod_server


def test_an_expired_token_is_refreshed_once_and_resent(ip) -> None:
    source = CountingBearer("expired-or-garbage", ip.access_token("alice"))
    transport = Transport(ip.api_url, auth=IceProdAuth(source), retry=FAST)
    assert transport.request("GET", "/datasets", params={"keys": "dataset_id"}) is not None
    assert source.refreshes == 1
    assert ip.counters.get("GET /datasets") == 2


async def test_async_flow_refreshes_the_same_way(ip) -> None:
    source = CountingBearer("garbage", "still-garbage")
    transport = Transport(ip.api_url, auth=IceProdAuth(source), retry=FAST)
    with pytest.raises(IceProdPermissionError, match="freshly refreshed token was rejected too"):
        await transport.arequest("GET", "/datasets")
    assert source.refreshes == 1  # once, never a loop
    assert ip.counters.get("GET /datasets") == 2


def test_other_403s_are_final(ip) -> None:
    ip.faults.add("GET /datasets", status=403, error="authorization failed")
    source = CountingBearer(ip.access_token("alice"))
    with pytest.raises(IceProdPermissionError, match="403 authorization failed"):
        Transport(ip.api_url, auth=IceProdAuth(source), retry=FAST).request("GET", "/datasets")
    assert source.refreshes == 0 and ip.counters.get("GET /datasets") == 1


def _reprs(value: Any, depth: int = 0) -> Iterator[str]:
    """The reprs a crash reporter would record for a frame local; plain strings are skipped (a local
    holding the token is the token), containers are looked into."""
    if isinstance(value, str | bytes | int | float | type(None)) or depth > 3:
        return
    if isinstance(value, dict):
        for item in value.values():
            yield from _reprs(item, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _reprs(item, depth + 1)
    else:
        yield repr(value)


def _frames(exc: BaseException | None) -> Iterator[TracebackType]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            yield tb
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_no_object_in_a_failed_grant_shows_a_secret_in_its_repr(ip, mode: str) -> None:
    """Issue 13 #8: what a crash reporter captures from frame locals holds no refresh token or secret.

    Before, the transport's request object showed the refresh token and the client secret.
    """
    from airflow_provider_iceprod.auth.oidc import OIDCClient

    secret = ip.service_client_secret
    refresh = ip.issue_refresh_token("alice")
    ip.faults.add(r"/protocol/openid-connect/token", drop=True)
    oidc = OIDCClient(ip.issuer_url, ip.service_client_id, client_secret=secret, retry=FAST)
    with pytest.raises(IceProdError) as info:
        if mode == "sync":
            oidc.refresh(refresh)
        else:
            asyncio.run(oidc.arefresh(refresh))
    checked = 0
    for tb in _frames(info.value):
        for name, value in list(tb.tb_frame.f_locals.items()):
            for text in _reprs(value):
                checked += 1
                assert refresh not in text and secret not in text, (tb.tb_frame.f_code.co_name, name)
    assert checked > 10


def test_reprs_of_secret_holders(ip) -> None:
    token = ip.access_token("alice")
    for holder in (
        StaticBearer(token),
        IceProdAuth(StaticBearer(token)),
        Transport(ip.api_url, auth=IceProdAuth(StaticBearer(token)), retry=FAST),
    ):
        assert token not in repr(holder)
    request = httpx.Request("GET", ip.api_url, headers={"Authorization": f"Bearer {token}"})
    assert token not in repr(request) and token not in repr(request.headers)
