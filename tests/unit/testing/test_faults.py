"""Fault injection and counters."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import requests
from standin_helpers import TWO_TASK_CONFIG, Api, wait_for

from airflow_provider_iceprod.testing import LocalIceProd
from airflow_provider_iceprod.testing.faults import Faults


def test_status_fault_before_handler_has_no_effect(iceprod_server: LocalIceProd, alice: Api) -> None:
    iceprod_server.faults.add(r"POST /datasets$", status=500, times=1)
    body = {
        "description": "d",
        "jobs_submitted": 1,
        "tasks_submitted": 1,
        "tasks_per_job": 1,
        "group": "users",
    }
    resp = alice("POST", "/datasets", body)
    assert (resp.status_code, resp.reason, resp.json()) == (
        500,
        "Internal Server Error",
        {"code": 500, "error": "Internal Server Error"},
    )
    assert iceprod_server.dataset_count() == 0
    assert alice("POST", "/datasets", body).status_code == 201  # times=1: the fault is used up
    assert iceprod_server.dataset_count() == 1


def test_lost_submit_response_still_creates_the_dataset(iceprod_server: LocalIceProd, alice: Api) -> None:
    iceprod_server.faults.add(r"POST /actions/submit", status=502, times=1, when="after")
    body = {"config": json.dumps(TWO_TASK_CONFIG), "description": "lost", "jobs_submitted": 1}
    resp = alice("POST", "/actions/submit", body)
    assert resp.status_code == 502 and resp.json() == {"code": 502, "error": "Bad Gateway"}
    wait_for(lambda: iceprod_server.dataset_count() == 1)
    assert iceprod_server.datasets()[0]["description"] == "lost"


def test_503_with_retry_after_and_429(iceprod_server: LocalIceProd, alice: Api) -> None:
    iceprod_server.faults.add(r"^/datasets$", status=503, retry_after=2, times=1)
    iceprod_server.faults.add(r"GET /dataset_summaries/status", status=429, retry_after=1.5, times=1)
    resp = alice("GET", "/datasets")
    assert (
        resp.status_code == 503 and resp.reason == "server overloaded" and resp.headers["Retry-After"] == "2"
    )
    resp = alice("GET", "/dataset_summaries/status")
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "1.5"
    assert alice("GET", "/datasets").status_code == 200


def test_templated_route_pattern_and_latency(iceprod_server: LocalIceProd, alice: Api) -> None:
    fault = iceprod_server.faults.add(r"GET /datasets/\{dataset_id\}$", latency=0.3, times=1)
    start = time.monotonic()
    assert alice("GET", "/datasets/0123abcd").status_code == 403
    assert time.monotonic() - start >= 0.3  # a lower bound: the server really slept
    assert fault.hits == 1 and len(iceprod_server.faults) == 0  # used up
    alice("GET", "/datasets/0123abcd")
    assert fault.hits == 1  # the second request met no fault


@pytest.mark.parametrize("when", ["before", "after"])
def test_dropped_connection(iceprod_server: LocalIceProd, alice: Api, when: str) -> None:
    iceprod_server.faults.add(r"POST /datasets$", drop=True, times=1, when=when)  # type: ignore[arg-type]
    body = {
        "description": "d",
        "jobs_submitted": 1,
        "tasks_submitted": 1,
        "tasks_per_job": 1,
        "group": "users",
    }
    with pytest.raises(requests.ConnectionError):
        alice("POST", "/datasets", body)
    assert iceprod_server.dataset_count() == (1 if when == "after" else 0)


def test_faults_on_the_token_endpoint(iceprod_server: LocalIceProd) -> None:
    iceprod_server.faults.add(r"/protocol/openid-connect/token", status=503, times=1)
    token = iceprod_server.issue_refresh_token()
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": "iceprod-public"}
    url = f"{iceprod_server.issuer_url}/protocol/openid-connect/token"
    assert requests.post(url, data=form, timeout=5).status_code == 503
    assert requests.post(url, data=form, timeout=5).status_code == 200
    assert iceprod_server.counters.grants["refresh_token"] == 1


def test_fault_clear_and_validation(iceprod_server: LocalIceProd, alice: Api) -> None:
    iceprod_server.faults.add(r"/healthz", status=500)
    assert alice("GET", "/healthz").status_code == 500
    iceprod_server.faults.clear()
    assert alice("GET", "/healthz").status_code == 200
    with pytest.raises(ValueError):
        iceprod_server.faults.add(r"/healthz")


def test_counters_per_route_and_grant(iceprod_server: LocalIceProd, alice: Api) -> None:
    iceprod_server.reset_counters()
    alice.ok("GET", "/datasets")
    alice("GET", "/datasets/aaaa")
    alice("GET", "/datasets/bbbb")
    alice("GET", "/no/such/route")
    assert iceprod_server.counters.get("GET /datasets") == 1
    assert iceprod_server.counters.get("GET /datasets/{dataset_id}") == 2
    assert iceprod_server.counters.get("GET (unmatched)") == 1
    assert iceprod_server.counters.total() == 4
    assert iceprod_server.counters.matching(r"^GET /datasets") == 3
    url = f"{iceprod_server.issuer_url}/protocol/openid-connect/token"
    form = {"grant_type": "client_credentials"}
    auth = (iceprod_server.service_client_id, iceprod_server.service_client_secret)
    assert requests.post(url, data=form, auth=auth, timeout=5).status_code == 200
    assert requests.post(url, data=form, auth=(auth[0], "wrong"), timeout=5).status_code == 401
    assert iceprod_server.counters.grants["client_credentials"] == 1
    assert iceprod_server.counters.grant_requests["client_credentials"] == 2
    iceprod_server.reset_counters()
    assert iceprod_server.counters.total() == 0 and not iceprod_server.counters.grants


def test_fault_options_are_checked() -> None:
    faults = Faults()
    when: Any = "later"
    with pytest.raises(ValueError, match="when must be 'before' or 'after'"):
        faults.add("x", status=500, when=when)
    with pytest.raises(ValueError, match="a fault needs status, drop or latency"):
        faults.add("x", times=1)
    assert len(faults) == 0
    assert faults.add("x", latency=0.5).when == "before"
