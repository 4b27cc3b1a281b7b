"""Retries against the stand-in's fault injection: what is retried, how long it waits, what is not."""

from __future__ import annotations

import time

import pytest
from hook_helpers import api_requests

from airflow_provider_iceprod.auth.httpx_auth import IceProdAuth, StaticBearer
from airflow_provider_iceprod.exceptions import (
    IceProdAuthError,
    IceProdError,
    IceProdPermissionError,
    IceProdTransientError,
)
from airflow_provider_iceprod.hooks.iceprod import IceProdHook
from airflow_provider_iceprod.retry import RetrySettings
from airflow_provider_iceprod.testing.server import LocalIceProd
from airflow_provider_iceprod.transport import Transport

ROUTE = "GET /datasets/{dataset_id}"


def test_503_retry_after_is_honoured(hook: IceProdHook, ip: LocalIceProd, dataset_id: str) -> None:
    ip.faults.add(r"GET /datasets/\{dataset_id\}$", status=503, retry_after=0.4, times=2)
    started = time.monotonic()
    assert hook.get_dataset(dataset_id).dataset_id == dataset_id
    elapsed = time.monotonic() - started
    assert ip.counters.get(ROUTE) == 3
    # Backoff alone would wait <= 0.01 + 0.02 s (retry_delay=0.01): the 2 x 0.4 s came from Retry-After.
    assert elapsed >= 0.8
    assert elapsed < 3


def test_retry_after_is_capped(ip: LocalIceProd, dataset_id: str) -> None:
    hook = IceProdHook(retry_delay=0.01, retry_after_cap=0.1, timeout=2)
    hook.token_provider.get_token()  # time only the request, not the login
    ip.reset_counters()
    ip.faults.add(r"GET /datasets/\{dataset_id\}$", status=503, retry_after=60, times=1)
    started = time.monotonic()
    hook.get_dataset(dataset_id)
    assert time.monotonic() - started < 5
    assert ip.counters.get(ROUTE) == 2


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({"status": 429}, id="429"),
        pytest.param({"status": 500}, id="500"),
        pytest.param({"status": 502}, id="502"),
        pytest.param({"drop": True}, id="dropped-connection"),
        pytest.param({"drop": True, "when": "after"}, id="dropped-after-handler"),
        pytest.param({"latency": 3.0}, id="timeout"),
    ],
)
def test_transient_failures_of_reads_are_retried(ip: LocalIceProd, dataset_id: str, fault: dict) -> None:
    hook = IceProdHook(retry_limit=3, retry_delay=0.01, timeout=0.5)
    hook.token_provider.get_token()
    ip.reset_counters()
    ip.faults.add(r"GET /datasets/\{dataset_id\}$", times=2, **fault)
    assert hook.get_dataset(dataset_id).dataset_id == dataset_id
    assert ip.counters.get(ROUTE) == 3


def test_gives_up_after_retry_limit(hook: IceProdHook, ip: LocalIceProd, dataset_id: str) -> None:
    ip.faults.add(r"GET /datasets/\{dataset_id\}$", status=503)
    with pytest.raises(IceProdTransientError) as info:
        hook.get_dataset(dataset_id)
    assert ip.counters.get(ROUTE) == 4  # retry_limit=3: four attempts in all
    assert info.value.status_code == 503
    assert info.value.iceprod_message == "server overloaded"
    assert str(info.value).startswith(f"GET /datasets/{dataset_id}: 503 server overloaded")
    assert "gave up after 4 attempts" in str(info.value)


def test_retries_are_logged_without_secrets(
    hook: IceProdHook, ip: LocalIceProd, dataset_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    token = hook.token_provider.get_token()
    ip.faults.add(r"GET /datasets/\{dataset_id\}$", status=503, times=1)
    with caplog.at_level("WARNING", logger="airflow_provider_iceprod.transport"):
        hook.get_dataset(dataset_id)
    retries = [r for r in caplog.records if r.name == "airflow_provider_iceprod.transport"]
    assert len(retries) == 1
    assert "503 server overloaded" in retries[0].getMessage()
    assert "retry 1 of 3" in retries[0].getMessage()
    assert token not in caplog.text


@pytest.mark.parametrize(
    ("status", "error"), [(400, "bad thing"), (404, "Dataset not found"), (409, "conflict")]
)
def test_other_4xx_are_not_retried(
    hook: IceProdHook, ip: LocalIceProd, dataset_id: str, status: int, error: str
) -> None:
    ip.faults.add(r"GET /datasets/\{dataset_id\}$", status=status, error=error)
    with pytest.raises(IceProdError) as info:
        hook.get_dataset(dataset_id)
    assert not isinstance(info.value, IceProdTransientError)
    assert info.value.iceprod_message == error
    assert ip.counters.get(ROUTE) == 1


def test_expired_token_is_refreshed_once(hook: IceProdHook, ip: LocalIceProd, dataset_id: str) -> None:
    ip.expire_access_tokens()
    assert hook.get_dataset(dataset_id).dataset_id == dataset_id
    assert ip.counters.get(ROUTE) == 2  # rejected once, re-sent once
    assert ip.counters.snapshot()["grants"] == {"refresh_token": 1}
    ip.reset_counters()
    hook.get_dataset(dataset_id)
    assert ip.counters.total() == 1  # the new token is cached


def test_other_403_is_final(hook: IceProdHook, ip: LocalIceProd, dataset_id: str) -> None:
    ip.faults.add(r"GET /datasets/\{dataset_id\}$", status=403, error="authorization failed")
    with pytest.raises(IceProdPermissionError, match="403 authorization failed"):
        hook.get_dataset(dataset_id)
    assert ip.counters.get(ROUTE) == 1
    assert ip.counters.snapshot()["grants"] == {}


def test_persistent_authentication_failure_refreshes_only_once(
    hook: IceProdHook, ip: LocalIceProd, dataset_id: str
) -> None:
    ip.faults.add(r"GET /datasets/\{dataset_id\}$", status=403, error="authentication failed")
    with pytest.raises(IceProdPermissionError, match="freshly refreshed token was rejected"):
        hook.get_dataset(dataset_id)
    assert ip.counters.get(ROUTE) == 2
    assert ip.counters.snapshot()["grants"] == {"refresh_token": 1}


def test_retries_never_multiply_with_the_token_request(ip: LocalIceProd, dataset_id: str) -> None:
    """The token endpoint is retried by its own transport; the API request around it is not re-run."""
    hook = IceProdHook(retry_limit=2, retry_delay=0.01, timeout=2)
    ip.faults.add(r"POST .*/token", status=503)
    with pytest.raises((IceProdTransientError, IceProdAuthError)):
        hook.get_dataset(dataset_id)
    token_requests = ip.counters.matching(r"POST .*/token")
    assert token_requests == 3  # 1 + retry_limit, not 3 x 3
    assert api_requests(ip) == {}


def test_form_body_without_token(ip: LocalIceProd) -> None:
    """The OIDC token endpoint: form body, no bearer token, OIDC error text kept."""
    transport = Transport(ip.issuer_url, auth=None, retry=RetrySettings(retry_delay=0.01), service="OIDC")
    refresh = ip.issue_refresh_token("alice")
    doc = transport.request(
        "POST",
        "/protocol/openid-connect/token",
        form={"grant_type": "refresh_token", "refresh_token": refresh, "client_id": ip.public_client_id},
    )
    assert doc["access_token"]
    with pytest.raises(IceProdError) as info:
        transport.request(
            "POST",
            "/protocol/openid-connect/token",
            form={"grant_type": "refresh_token", "refresh_token": "nope", "client_id": ip.public_client_id},
        )
    assert info.value.iceprod_message is not None and info.value.iceprod_message.startswith("invalid_grant")
    assert "nope" not in str(info.value)


def test_static_bearer_transport(ip: LocalIceProd, dataset_id: str) -> None:
    transport = Transport(
        ip.api_url, auth=IceProdAuth(StaticBearer(ip.access_token("alice"))), retry=RetrySettings()
    )
    assert transport.request("GET", f"/datasets/{dataset_id}")["dataset_id"] == dataset_id
