"""The identity provider: discovery, tokens, refresh (with rotation), revocation, client credentials and the
RFC 8628 device flow, over plain HTTP and with wipac-rest-tools' own clients."""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from standin_helpers import Api, assert_error

from airflow_provider_iceprod.testing import LocalIceProd


def _token_url(ip: LocalIceProd) -> str:
    return f"{ip.issuer_url}/protocol/openid-connect/token"


def _refresh(ip: LocalIceProd, token: str) -> requests.Response:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token,
        "client_id": ip.public_client_id,
        "scope": "",
    }
    return requests.post(_token_url(ip), data=form, timeout=10)


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _device_start(ip: LocalIceProd, challenge: str | None) -> requests.Response:
    form = {"client_id": ip.public_client_id, "scope": "offline_access "}
    if challenge:
        form.update(code_challenge=challenge, code_challenge_method="S256")
    return requests.post(f"{ip.issuer_url}/protocol/openid-connect/auth/device", data=form, timeout=10)


def _device_poll(ip: LocalIceProd, device_code: str, verifier: str) -> requests.Response:
    form = {
        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "device_code": device_code,
        "client_id": ip.public_client_id,
        "code_verifier": verifier,
    }
    return requests.post(_token_url(ip), data=form, timeout=10)


def _oauth_error(resp: requests.Response, status: int, error: str) -> None:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert body["error"] == error and body["error_description"], body


# ------------------------------------------------------------------ discovery and token format


def test_discovery_and_jwks(iceprod_server: LocalIceProd) -> None:
    doc = requests.get(f"{iceprod_server.issuer_url}/.well-known/openid-configuration", timeout=10).json()
    base = f"{iceprod_server.issuer_url}/protocol/openid-connect"
    assert doc["issuer"] == iceprod_server.issuer_url
    assert doc["token_endpoint"] == f"{base}/token"
    assert doc["device_authorization_endpoint"] == f"{base}/auth/device"
    assert doc["revocation_endpoint"] == f"{base}/revoke"
    assert doc["code_challenge_methods_supported"] == ["S256"]
    jwks = requests.get(doc["jwks_uri"], timeout=10).json()
    (key,) = jwks["keys"]
    assert key["kty"] == "RSA" and key["alg"] == "RS256"
    token = iceprod_server.access_token("alice")
    assert jwt.get_unverified_header(token)["kid"] == key["kid"]
    public = jwt.PyJWK.from_dict(key).key
    claims = jwt.decode(token, public, algorithms=["RS256"], issuer=iceprod_server.issuer_url)
    assert claims["preferred_username"] == "alice"
    assert claims["groups"] == ["/institutions/IceCube/UW-Madison", "/posix/simprod-submit"]
    assert claims["azp"] == "iceprod-public" and claims["sub"]


def test_token_lifetime_and_refresh_token_shape() -> None:
    with LocalIceProd(token_lifetime=120) as ip:
        refresh = ip.issue_refresh_token("bob")
        header = jwt.get_unverified_header(refresh)
        claims = jwt.decode(refresh, options={"verify_signature": False})
        assert header["alg"] == "RS256" and header["kid"]
        assert claims["typ"] == "Offline" and claims["jti"] and claims["iss"] == ip.issuer_url
        assert claims["exp"] - claims["iat"] > 5 * 365 * 86400
        body = _refresh(ip, refresh).json()
        access = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert access["exp"] - access["iat"] == 120 and body["expires_in"] == 120
        assert access["preferred_username"] == "bob" and body["token_type"] == "Bearer"


# ------------------------------------------------------------------ refresh, rotation, revocation


def test_non_rotating_refresh_keeps_old_token_valid(iceprod_server: LocalIceProd) -> None:
    token = iceprod_server.issue_refresh_token()
    first = _refresh(iceprod_server, token)
    assert first.status_code == 200 and first.json()["refresh_token"] != token
    assert _refresh(iceprod_server, token).status_code == 200
    assert _refresh(iceprod_server, first.json()["refresh_token"]).status_code == 200
    assert iceprod_server.counters.grants["refresh_token"] == 3


def test_rotating_refresh_is_single_use() -> None:
    with LocalIceProd(rotate_refresh_tokens=True) as ip:
        token = ip.issue_refresh_token()
        first = _refresh(ip, token)
        assert first.status_code == 200
        new = first.json()["refresh_token"]
        _oauth_error(_refresh(ip, token), 400, "invalid_grant")
        assert not ip.refresh_token_is_valid(token) and ip.refresh_token_is_valid(new)
        assert _refresh(ip, new).status_code == 200
        assert ip.counters.grants["refresh_token"] == 2 and ip.counters.grant_requests["refresh_token"] == 3


def test_rotating_refresh_race_has_one_winner() -> None:
    with LocalIceProd(rotate_refresh_tokens=True) as ip:
        token = ip.issue_refresh_token()
        with ThreadPoolExecutor(8) as pool:
            codes = sorted(r.status_code for r in pool.map(lambda _: _refresh(ip, token), range(8)))
        assert codes == [200] + [400] * 7


def test_refresh_errors(iceprod_server: LocalIceProd) -> None:
    _oauth_error(_refresh(iceprod_server, "garbage"), 400, "invalid_grant")
    with LocalIceProd() as other:
        _oauth_error(_refresh(iceprod_server, other.issue_refresh_token()), 400, "invalid_grant")
    token = iceprod_server.issue_refresh_token()
    form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": "someone-else"}
    _oauth_error(requests.post(_token_url(iceprod_server), data=form, timeout=10), 401, "invalid_client")
    form = {"grant_type": "refresh_token", "client_id": iceprod_server.public_client_id}
    _oauth_error(requests.post(_token_url(iceprod_server), data=form, timeout=10), 400, "invalid_request")
    form = {"grant_type": "password", "client_id": iceprod_server.public_client_id}
    _oauth_error(
        requests.post(_token_url(iceprod_server), data=form, timeout=10), 400, "unsupported_grant_type"
    )
    # an access token is no refresh token
    _oauth_error(_refresh(iceprod_server, iceprod_server.access_token()), 400, "invalid_grant")


def test_revocation_endpoint_ends_the_session(iceprod_server: LocalIceProd) -> None:
    token = iceprod_server.issue_refresh_token()
    sibling = _refresh(iceprod_server, token).json()["refresh_token"]  # same login, non-rotating
    url = f"{iceprod_server.issuer_url}/protocol/openid-connect/revoke"
    form = {"token": token, "token_type_hint": "refresh_token", "client_id": iceprod_server.public_client_id}
    assert requests.post(url, data=form, timeout=10).status_code == 200
    _oauth_error(_refresh(iceprod_server, token), 400, "invalid_grant")
    _oauth_error(_refresh(iceprod_server, sibling), 400, "invalid_grant")
    # unknown tokens and access tokens: 200, nothing happens (RFC 7009)
    for other in ("garbage", iceprod_server.access_token()):
        form["token"] = other
        assert requests.post(url, data=form, timeout=10).status_code == 200


def test_python_revocation(iceprod_server: LocalIceProd) -> None:
    alice_token, bob_token = (
        iceprod_server.issue_refresh_token("alice"),
        iceprod_server.issue_refresh_token("bob"),
    )
    assert iceprod_server.revoke_refresh_token(alice_token) is True
    assert iceprod_server.revoke_refresh_token(alice_token) is False
    assert _refresh(iceprod_server, bob_token).status_code == 200
    assert iceprod_server.revoke_all("bob") == 1
    _oauth_error(_refresh(iceprod_server, bob_token), 400, "invalid_grant")


def test_access_tokens_survive_revocation_until_they_expire(iceprod_server: LocalIceProd) -> None:
    """IceProd checks JWTs offline, so revoking a login does not cut off its live access tokens."""
    token = iceprod_server.issue_refresh_token()
    access = _refresh(iceprod_server, token).json()["access_token"]
    iceprod_server.revoke_refresh_token(token)
    api = Api(iceprod_server, None)
    api.headers = {"Authorization": f"Bearer {access}"}
    assert api("GET", "/datasets").status_code == 200
    iceprod_server.expire_access_tokens()
    assert_error(api("GET", "/datasets"), 403, "authentication failed")


# ------------------------------------------------------------------ client credentials


def test_client_credentials(iceprod_server: LocalIceProd) -> None:
    url = _token_url(iceprod_server)
    good = (iceprod_server.service_client_id, iceprod_server.service_client_secret)
    basic = requests.post(url, data={"grant_type": "client_credentials"}, auth=good, timeout=10)
    form = {"grant_type": "client_credentials", "client_id": good[0], "client_secret": good[1]}
    posted = requests.post(url, data=form, timeout=10)
    for resp in (basic, posted):
        assert resp.status_code == 200 and "refresh_token" not in resp.json()
        claims = jwt.decode(resp.json()["access_token"], options={"verify_signature": False})
        assert claims["resource_access"] == {"iceprod": {"roles": ["iceprod-system"]}}
    _oauth_error(
        requests.post(url, data={"grant_type": "client_credentials"}, auth=(good[0], "x"), timeout=10),
        401,
        "unauthorized_client",
    )
    form = {"grant_type": "client_credentials", "client_id": iceprod_server.public_client_id}
    _oauth_error(requests.post(url, data=form, timeout=10), 401, "unauthorized_client")
    # a system token: admin-only routes yes, user-only routes no
    system = Api(iceprod_server, None)
    system.headers = {"Authorization": f"Bearer {posted.json()['access_token']}"}
    assert system("GET", "/groups").status_code == 200
    resp = system("POST", "/datasets", {"description": "d", "jobs_submitted": 1, "tasks_submitted": 1,
                                        "tasks_per_job": 1, "group": "users", "username": "alice"})  # fmt: skip
    assert resp.status_code == 201
    assert iceprod_server.dataset(resp.json()["result"])["username"] == "alice"


def test_client_credentials_as_a_service_user() -> None:
    with LocalIceProd(service_system=False, service_user="bob", service_client_secret="s3cret") as ip:
        assert ip.service_client_secret == "s3cret"
        claims = jwt.decode(ip.service_access_token(), options={"verify_signature": False})
        assert claims["preferred_username"] == "bob" and "resource_access" not in claims
        api = Api(ip, None)
        api.headers = {"Authorization": f"Bearer {ip.service_access_token()}"}
        assert_error(api("GET", "/groups"), 403, "authorization failed")
        assert api("GET", "/datasets").status_code == 200


# ------------------------------------------------------------------ device flow over HTTP


def test_device_flow_slow_down() -> None:
    with LocalIceProd(device_interval=1) as ip:
        verifier, challenge = _pkce()
        start = _device_start(ip, challenge).json()
        assert start["interval"] == 1 and start["expires_in"] == 600
        _oauth_error(_device_poll(ip, start["device_code"], verifier), 400, "slow_down")  # polled at once
        time.sleep(1.05)
        _oauth_error(
            _device_poll(ip, start["device_code"], verifier), 400, "slow_down"
        )  # interval is now 6 s
        time.sleep(0.5)
        _oauth_error(_device_poll(ip, start["device_code"], verifier), 400, "slow_down")


def test_device_flow_approve_on_the_page() -> None:
    with LocalIceProd(device_interval=0) as ip:
        verifier, challenge = _pkce()
        start = _device_start(ip, challenge).json()
        assert start["verification_uri"] == f"{ip.issuer_url}/device"
        assert start["verification_uri_complete"] == f"{ip.issuer_url}/device?user_code={start['user_code']}"
        _oauth_error(_device_poll(ip, start["device_code"], verifier), 400, "authorization_pending")
        page = requests.get(start["verification_uri_complete"], timeout=10)
        assert page.status_code == 200 and start["user_code"] in page.text
        assert "Approve</button>" in page.text and "Deny</button>" in page.text
        form = {"user_code": start["user_code"], "username": "bob", "decision": "approve"}
        approved = requests.post(start["verification_uri"], data=form, timeout=10)
        assert approved.status_code == 200 and "approved as bob" in approved.text
        _oauth_error(_device_poll(ip, start["device_code"], "wrong-verifier"), 400, "invalid_grant")
        done = _device_poll(ip, start["device_code"], verifier)
        assert done.status_code == 200
        claims = jwt.decode(done.json()["access_token"], options={"verify_signature": False})
        assert claims["preferred_username"] == "bob"
        assert ip.refresh_token_is_valid(done.json()["refresh_token"])
        _oauth_error(_device_poll(ip, start["device_code"], verifier), 400, "invalid_grant")  # used up
        assert ip.counters.grants["device_code"] == 1
        assert ip.counters.grant_requests["device_code"] == 4


def test_device_flow_pending_deny_and_expiry() -> None:
    with LocalIceProd(device_interval=0, device_code_lifetime=1) as ip:
        verifier, challenge = _pkce()
        start = _device_start(ip, challenge).json()
        _oauth_error(_device_poll(ip, start["device_code"], verifier), 400, "authorization_pending")
        form = {"user_code": start["user_code"].lower().replace("-", ""), "decision": "deny"}
        assert requests.post(f"{ip.issuer_url}/device", data=form, timeout=10).status_code == 200
        _oauth_error(_device_poll(ip, start["device_code"], verifier), 400, "access_denied")
        late = _device_start(ip, challenge).json()
        time.sleep(1.05)
        _oauth_error(_device_poll(ip, late["device_code"], verifier), 400, "expired_token")
        page = requests.post(f"{ip.issuer_url}/device", data={"user_code": late["user_code"]}, timeout=10)
        assert page.status_code == 400 and "Unknown or expired code" in page.text


def test_device_flow_requires_pkce_for_the_public_client(iceprod_server: LocalIceProd) -> None:
    _oauth_error(_device_start(iceprod_server, None), 400, "invalid_request")
    form = {"client_id": "nobody", "code_challenge": "x", "code_challenge_method": "S256"}
    resp = requests.post(
        f"{iceprod_server.issuer_url}/protocol/openid-connect/auth/device", data=form, timeout=10
    )
    _oauth_error(resp, 401, "invalid_client")


def test_auto_approval_delay() -> None:
    with LocalIceProd(auto_approve_as="alice", auto_approve_delay=0.5, device_interval=0) as ip:
        verifier, challenge = _pkce()
        start = _device_start(ip, challenge).json()
        _oauth_error(_device_poll(ip, start["device_code"], verifier), 400, "authorization_pending")
        time.sleep(0.55)
        assert _device_poll(ip, start["device_code"], verifier).status_code == 200


# ------------------------------------------------------------------ wipac-rest-tools clients, as IceProd's users run them


@pytest.fixture
def quiet_qrcode(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """rest-tools prints the verification URL and a QR code; capture the request instead."""
    import rest_tools.client.device_client as device_client

    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(device_client, "_print_qrcode", seen.append)
    return seen


@pytest.mark.parametrize("rotate", [False, True])
async def test_saved_device_grant_auth(tmp_path: Path, quiet_qrcode: list, rotate: bool) -> None:
    from rest_tools.client import SavedDeviceGrantAuth

    with LocalIceProd(auto_approve_as="alice", device_interval=1, rotate_refresh_tokens=rotate) as ip:
        filename = tmp_path / ".iceprod-auth"
        client = SavedDeviceGrantAuth(
            ip.api_url, token_url=ip.issuer_url, filename=str(filename), client_id=ip.public_client_id
        )
        assert len(quiet_qrcode) == 1 and ip.counters.grants["device_code"] == 1
        assert client.request_seq("GET", "/datasets") == {}
        assert await client.request("GET", "/dataset_summaries/status") == {}
        saved = filename.read_text()
        assert ip.refresh_token_is_valid(saved)
        # a second client starts from the saved token: no new device flow
        again = SavedDeviceGrantAuth(
            ip.api_url, token_url=ip.issuer_url, filename=str(filename), client_id=ip.public_client_id
        )
        assert again.request_seq("GET", "/datasets") == {}
        assert len(quiet_qrcode) == 1 and ip.counters.grants["device_code"] == 1
        if rotate:
            assert not ip.refresh_token_is_valid(saved)  # used by `again`, which saved its successor
            assert ip.refresh_token_is_valid(filename.read_text())


def test_person_approves_on_the_page(quiet_qrcode: list) -> None:
    from rest_tools.client.device_client import CommonDeviceGrant

    with LocalIceProd(device_interval=1) as ip:
        result: dict[str, Any] = {}

        def login() -> None:
            result["token"] = CommonDeviceGrant().perform_device_grant(
                __import__("logging").getLogger("test"),
                f"{ip.issuer_url}/protocol/openid-connect/auth/device",
                _token_url(ip),
                ip.public_client_id,
            )

        thread = threading.Thread(target=login)
        thread.start()
        deadline = time.monotonic() + 10
        while not quiet_qrcode and time.monotonic() < deadline:
            time.sleep(0.02)
        request = quiet_qrcode[0]
        page = requests.get(request["verification_uri_complete"], timeout=10)
        assert request["user_code"] in page.text
        form = {"user_code": request["user_code"], "username": "admin", "decision": "approve"}
        assert requests.post(request["verification_uri"], data=form, timeout=10).status_code == 200
        thread.join(20)
        assert not thread.is_alive()
        claims = jwt.decode(result["token"], options={"verify_signature": False})
        assert claims["typ"] == "Offline" and "offline_access" in claims["scope"]
        assert ip.refresh_token_is_valid(result["token"])


def test_openid_rest_client_refreshes_and_rotates() -> None:
    from rest_tools.client import OpenIDRestClient

    with LocalIceProd(rotate_refresh_tokens=True, token_lifetime=300) as ip:
        saved: list[str] = []
        client = OpenIDRestClient(
            ip.api_url,
            token_url=ip.issuer_url,
            refresh_token=ip.issue_refresh_token("bob"),
            client_id=ip.public_client_id,
            update_func=lambda access, refresh: saved.append(str(refresh)),
            retries=0,
        )
        assert client.request_seq("GET", "/datasets") == {}
        # construction refreshes and throws the access token away; the first request refreshes again
        assert ip.counters.grants["refresh_token"] == 2 and len(saved) == 2
        assert client.request_seq("GET", "/datasets") == {}  # cached access token
        assert ip.counters.grants["refresh_token"] == 2
        ip.expire_access_tokens()
        with pytest.raises(requests.HTTPError) as excinfo:
            client.request_seq("GET", "/datasets")  # rest-tools does not refresh on 403
        assert excinfo.value.response.status_code == 403
        client.access_token = None
        assert client.request_seq("GET", "/datasets") == {}
        assert ip.counters.grants["refresh_token"] == 3
        assert [ip.refresh_token_is_valid(t) for t in saved] == [False, False, True]


def test_client_credentials_auth() -> None:
    from rest_tools.client import ClientCredentialsAuth

    with LocalIceProd() as ip:
        client = ClientCredentialsAuth(
            ip.api_url,
            token_url=ip.issuer_url,
            client_id=ip.service_client_id,
            client_secret=ip.service_client_secret,
        )
        assert client.request_seq("GET", "/groups")["results"][0]["name"] == "admin"
        with pytest.raises(requests.HTTPError) as excinfo:
            client.request_seq("PUT", "/datasets/abc/jobs_submitted", {"jobs_submitted": 2})
        assert excinfo.value.response.status_code == 403
        assert ip.counters.grants["client_credentials"] >= 1
