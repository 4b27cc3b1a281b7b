"""The OIDC client against the stand-in's identity provider, over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time

import pytest
from auth_helpers import FAST_RETRY, StaticServer, closed_port_url

from airflow_provider_iceprod.auth.oidc import OIDCClient, pkce_pair
from airflow_provider_iceprod.exceptions import IceProdAuthError, IceProdConfigError, IceProdTransientError
from airflow_provider_iceprod.retry import RetrySettings
from airflow_provider_iceprod.testing import LocalIceProd

TOKEN_ROUTE = r"/protocol/openid-connect/token"


def client(ip: LocalIceProd, **kw) -> OIDCClient:
    kw.setdefault("retry", FAST_RETRY)
    return OIDCClient(ip.issuer_url, kw.pop("client_id", ip.public_client_id), conn_id="iceprod_test", **kw)


def test_pkce_pair_is_s256() -> None:
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert challenge == expected


def test_discovery_is_fetched_once_per_process(idp: LocalIceProd) -> None:
    first = client(idp).discover()
    second = client(idp).discover()
    assert first == second
    assert first.token_endpoint.endswith(TOKEN_ROUTE)
    assert first.revocation_endpoint and first.device_authorization_endpoint
    assert idp.counters.matching("openid-configuration") == 1


def test_refresh_grant_returns_a_jwt_access_token(idp: LocalIceProd) -> None:
    grant = client(idp).refresh(idp.issue_refresh_token("bob"))
    assert grant.access_token is not None
    assert grant.access_token.identity.username == "bob"
    assert grant.access_token.seconds_left() > 200
    assert grant.refresh_token  # Keycloak sends one on every refresh
    assert idp.counters.grants["refresh_token"] == 1


def test_invalid_grant_is_an_auth_error_naming_login_and_never_retried(idp: LocalIceProd) -> None:
    token = idp.issue_refresh_token("alice")
    idp.revoke_refresh_token(token)
    with pytest.raises(IceProdAuthError) as info:
        client(idp).refresh(token)
    message = str(info.value)
    assert "invalid_grant" in message
    assert "airflow-iceprod login --conn-id iceprod_test" in message
    assert token not in message and token not in repr(info.value.body)
    assert idp.counters.grant_requests["refresh_token"] == 1


def test_token_endpoint_5xx_is_retried_then_succeeds(idp: LocalIceProd) -> None:
    idp.faults.add(TOKEN_ROUTE, status=503, times=2)
    grant = client(idp).refresh(idp.issue_refresh_token("alice"))
    assert grant.access_token is not None
    assert idp.counters.grants["refresh_token"] == 1


def test_token_endpoint_that_keeps_failing_gives_a_clear_transient_error(idp: LocalIceProd) -> None:
    idp.faults.add(TOKEN_ROUTE, status=500)
    started = time.monotonic()
    with pytest.raises(IceProdTransientError) as info:
        client(idp).refresh(idp.issue_refresh_token("alice"))
    assert time.monotonic() - started < 10
    assert "kept failing" in str(info.value) and idp.issuer_url in str(info.value)
    assert getattr(info.value, "attempts", None) == FAST_RETRY.attempts  # no outer transport retries again


def test_client_credentials_uses_the_secret(idp: LocalIceProd) -> None:
    grant = client(
        idp, client_id=idp.service_client_id, client_secret=idp.service_client_secret
    ).client_credentials()
    assert grant.access_token is not None
    assert grant.access_token.identity.username == f"service-account-{idp.service_client_id}"
    assert idp.counters.grants["client_credentials"] == 1


def test_wrong_client_secret_names_client_id_and_password(idp: LocalIceProd) -> None:
    with pytest.raises(IceProdAuthError) as info:
        client(idp, client_id=idp.service_client_id, client_secret="wrong").client_credentials()
    assert "client_id" in str(info.value) and "password" in str(info.value)
    assert "wrong" not in str(info.value)


def test_client_credentials_without_secret_is_a_config_error(idp: LocalIceProd) -> None:
    with pytest.raises(IceProdConfigError) as info:
        client(idp).client_credentials()
    assert info.value.field == "password"


def test_bad_issuer_is_a_config_error_naming_oauth_url(idp: LocalIceProd) -> None:
    url = idp.api_url + "/not-an-issuer"  # 404
    started = time.monotonic()
    with pytest.raises(IceProdConfigError) as info:
        OIDCClient(url, "iceprod-public", retry=FAST_RETRY, conn_id="c").refresh("x" * 40)
    assert time.monotonic() - started < 10
    assert info.value.field == "oauth_url"
    assert "oauth_url" in str(info.value) and "MissingSchema" not in str(info.value)


@pytest.mark.parametrize(
    "body",
    [
        b"<html>login page</html>",
        json.dumps({"issuer": "x"}).encode(),
        json.dumps(["not", "an", "object"]).encode(),
    ],
    ids=["html", "no-token-endpoint", "list"],
)
def test_broken_discovery_document_is_a_config_error(body: bytes) -> None:
    with StaticServer(body) as server, pytest.raises(IceProdConfigError) as info:
        OIDCClient(server.url + "/realm", "iceprod-public", retry=FAST_RETRY).discover()
    assert info.value.field == "oauth_url"
    assert "discovery document" in str(info.value)


def test_failed_discovery_is_not_cached(idp: LocalIceProd) -> None:
    idp.faults.add("openid-configuration", status=404, times=1)
    with pytest.raises(IceProdConfigError):
        client(idp).discover()
    assert client(idp).discover().token_endpoint


def test_discovery_5xx_is_transient_not_config(idp: LocalIceProd) -> None:
    idp.faults.add("openid-configuration", status=502)
    with pytest.raises(IceProdTransientError) as info:
        client(idp).discover()
    assert "oauth_url" in str(info.value) and "Check the connection" not in str(info.value)


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"drop": True}, id="connection-reset"),
        pytest.param({"latency": 2.0}, id="timeout"),
    ],
)
def test_discovery_blip_is_transient_and_never_blames_oauth_url(idp: LocalIceProd, fault: dict) -> None:
    """Issue 13 #1: a reset or timeout at the issuer is an outage, not a wrong oauth_url."""
    idp.faults.add("openid-configuration", **fault)
    quick = RetrySettings(retry_limit=1, retry_delay=0.01, timeout=0.5)
    sync, async_ = client(idp, retry=quick).discover, client(idp, retry=quick).adiscover
    for attempt in (sync, lambda: asyncio.run(async_())):
        with pytest.raises(IceProdTransientError) as info:
            attempt()
        assert not isinstance(info.value, IceProdConfigError)
        assert "Check the connection's oauth_url" not in str(info.value)
        assert "try again later" in str(info.value)
    assert idp.counters.matching("openid-configuration") == 4  # 2 attempts each: the policy retried
    idp.faults.clear()
    assert client(idp).discover().token_endpoint  # nothing bad was cached


def test_unreachable_issuer_is_transient(idp: LocalIceProd) -> None:
    with pytest.raises(IceProdTransientError) as info:
        OIDCClient(closed_port_url(), "iceprod-public", retry=FAST_RETRY, conn_id="c").refresh("x" * 40)
    assert not isinstance(info.value, IceProdConfigError)


def test_device_flow_with_pkce_and_offline_access(idp: LocalIceProd) -> None:
    oidc = client(idp)
    auth = oidc.start_device_authorization("offline_access")
    assert auth.user_code and auth.verification_uri.startswith(idp.issuer_url)
    assert "device_code" not in repr(auth) and auth.device_code not in repr(auth)
    ticks: list[float] = []
    grant = oidc.poll_device_token(auth, on_tick=ticks.append)
    assert grant.refresh_token and grant.access_token is not None
    assert grant.access_token.identity.username == "alice"
    assert "offline_access" in grant.scope.split()
    assert ticks and all(0 < t <= auth.expires_in for t in ticks)
    # the refresh token from the device flow works for a refresh grant
    assert oidc.refresh(grant.refresh_token).access_token is not None


def test_device_flow_denied() -> None:
    with LocalIceProd(device_interval=0.1, materialize_interval=None) as ip:
        oidc = client(ip)
        auth = oidc.start_device_authorization()
        ip.idp.decide(auth.user_code, username=None, approve=False)
        with pytest.raises(IceProdAuthError) as info:
            oidc.poll_device_token(auth)
        assert "denied" in str(info.value)
        assert "airflow-iceprod login --conn-id iceprod_test" in str(info.value)


@pytest.mark.timeout(30)
def test_device_flow_expires_within_expires_in() -> None:
    with LocalIceProd(device_interval=0.2, device_code_lifetime=1.5, materialize_interval=None) as ip:
        oidc = client(ip)
        auth = oidc.start_device_authorization()
        started = time.monotonic()
        with pytest.raises(IceProdAuthError) as info:
            oidc.poll_device_token(auth)
        assert time.monotonic() - started < 6
        assert "expired" in str(info.value)


@pytest.mark.timeout(30)
def test_device_flow_slow_down_adds_five_seconds_and_expiry_bounds_the_wait() -> None:
    with LocalIceProd(device_interval=1.0, device_code_lifetime=7, materialize_interval=None) as ip:
        oidc = client(ip)
        auth = oidc.start_device_authorization()
        # Poll faster than the issuer's interval: it answers slow_down, and the next poll must come
        # 5 s later; nobody approves, so the wait ends at expires_in with a clear error.
        from dataclasses import replace

        started = time.monotonic()
        with pytest.raises(IceProdAuthError) as info:
            oidc.poll_device_token(replace(auth, interval=0.0))
        waited = time.monotonic() - started
        assert "expired" in str(info.value)
        assert 6.0 <= waited < 12
        assert ip.counters.grant_requests["device_code"] == 2  # t=0 (slow_down) and t=5 (pending/slow_down)


def test_revoke_ends_the_session(idp: LocalIceProd) -> None:
    token = idp.issue_refresh_token("alice")
    assert client(idp).revoke(token) is True
    assert not idp.refresh_token_is_valid(token)
