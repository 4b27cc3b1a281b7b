"""The stand-in starts on a free loopback port, serves, and stops without leaking threads or ports."""

from __future__ import annotations

import json
import socket
import threading

import pytest
import requests

from airflow_provider_iceprod.testing import LocalIceProd


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def test_start_serve_stop_leaves_nothing_behind() -> None:
    before = set(threading.enumerate())
    with LocalIceProd() as ip:
        assert ip.api_url.startswith("http://127.0.0.1:")
        assert ip.issuer_url == f"{ip.api_url}/auth/realms/IceCube"
        assert requests.get(f"{ip.api_url}/healthz", timeout=5).json() == {}
        port = ip.port
        server_threads = set(threading.enumerate()) - before
        assert all(t.daemon for t in server_threads)
    assert set(threading.enumerate()) - before == set()
    assert _port_is_free(port)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_stop_closes_keep_alive_connections() -> None:
    session = requests.Session()
    with LocalIceProd() as ip:
        assert session.get(f"{ip.api_url}/healthz", timeout=5).status_code == 200
    with pytest.raises(requests.ConnectionError):
        session.get(f"{ip.api_url}/healthz", timeout=2)
    session.close()


def test_two_servers_get_different_ports() -> None:
    with LocalIceProd() as one, LocalIceProd() as two:
        assert one.port != two.port
        assert one.issue_refresh_token() != two.issue_refresh_token()


def test_info_lists_urls_and_clients(iceprod_server: LocalIceProd) -> None:
    info = iceprod_server.info()
    assert info["api_url"] == info["actions_url"] == iceprod_server.api_url
    assert info["public_client_id"] == "iceprod-public"
    assert info["service_client_id"] == "iceprod-service"
    assert len(info["service_client_secret"]) > 20


def test_separate_actions_path() -> None:
    with LocalIceProd(actions_path="/svc") as ip:
        assert ip.actions_url == f"{ip.api_url}/svc"
        token = ip.access_token("alice")
        resp = requests.get(
            f"{ip.actions_url}/actions/submit", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
        assert resp.json() == {"queued": 0, "processing": 0, "error": 0, "complete": 0}
        health = requests.get(f"{ip.actions_url}/healthz", timeout=5).json()
        assert health["num_requests"] == 0
        assert requests.get(f"{ip.api_url}/actions/submit", timeout=5).status_code == 404
        assert ip.connection_extra()["actions_url"] == ip.actions_url


def test_iceprod_connection_fixture_sets_a_parseable_airflow_connection(
    iceprod_connection: LocalIceProd,
) -> None:
    import os

    from airflow_provider_iceprod.settings import ConnectionSettings

    raw = json.loads(os.environ["AIRFLOW_CONN_ICEPROD_DEFAULT"])
    assert raw["conn_type"] == "iceprod"
    settings = ConnectionSettings.from_fields(
        "iceprod_default", raw["host"], raw.get("password"), raw["extra"]
    )
    assert settings.api_url == iceprod_connection.api_url
    assert settings.oauth_url == iceprod_connection.issuer_url
    assert settings.client_id == "iceprod-public"
    assert settings.refresh_token is not None
    assert iceprod_connection.refresh_token_is_valid(settings.refresh_token)


def test_connection_uri_round_trips_through_airflow(iceprod_server: LocalIceProd) -> None:
    from airflow.models.connection import Connection

    from airflow_provider_iceprod.settings import ConnectionSettings

    conn = Connection(conn_id="iceprod_default", uri=iceprod_server.airflow_connection_uri())
    settings = ConnectionSettings.from_connection(conn)
    assert settings.api_url == iceprod_server.api_url
    assert settings.oauth_url == iceprod_server.issuer_url
    assert settings.refresh_token and iceprod_server.refresh_token_is_valid(settings.refresh_token)

    service = Connection(conn_id="svc", uri=iceprod_server.airflow_connection_uri(service=True))
    svc = ConnectionSettings.from_connection(service)
    assert svc.credential_kind == "client_credentials"
    assert svc.client_id == iceprod_server.service_client_id
    assert svc.client_secret == iceprod_server.service_client_secret
