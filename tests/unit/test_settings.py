"""Parsing the ``iceprod`` connection: defaults, normalisation, and clear errors naming the field."""

from __future__ import annotations

import pytest

from airflow_provider_iceprod.exceptions import IceProdConfigError
from airflow_provider_iceprod.settings import ConnectionSettings


def test_defaults_point_at_production_iceprod() -> None:
    settings = ConnectionSettings.from_fields("c", None, None, None)
    assert settings.api_url == "https://api.iceprod.icecube.aq"
    assert settings.actions_url == settings.api_url
    assert settings.oauth_url == "https://keycloak.icecube.wisc.edu/auth/realms/IceCube"
    assert settings.client_id == "iceprod-public"
    assert settings.credential_kind == "none"


def test_bare_host_gets_https_and_trailing_slashes_go() -> None:
    settings = ConnectionSettings.from_fields(
        "c", "api.example.org/", None, {"actions_url": "http://127.0.0.1:8081/", "refresh_token": " tok \n"}
    )
    assert settings.api_url == "https://api.example.org"
    assert settings.actions_url == "http://127.0.0.1:8081"
    assert settings.refresh_token == "tok"
    assert settings.credential_kind == "refresh_token"


def test_client_secret_selects_client_credentials_and_stays_out_of_repr() -> None:
    settings = ConnectionSettings.from_fields("c", None, "s3cret-value", {"refresh_token": "r3fresh-value"})
    assert settings.credential_kind == "client_credentials"
    assert "s3cret-value" not in repr(settings)
    assert "r3fresh-value" not in repr(settings)


@pytest.mark.parametrize(
    ("host", "extra", "field"),
    [
        ("http://", {}, "host"),
        ("https://:80", {}, "host"),
        ("ftp://api.example.org", {}, "host"),
        (None, {"oauth_url": "ftp://keycloak.example.org"}, "oauth_url"),
        (None, {"refresh_token_saved_at": "yesterday"}, "refresh_token_saved_at"),
    ],
)
def test_bad_fields_name_the_field(host: str | None, extra: dict[str, str], field: str) -> None:
    with pytest.raises(IceProdConfigError) as info:
        ConnectionSettings.from_fields("my_conn", host, None, extra)
    assert info.value.field == field
    assert field in str(info.value) or "my_conn" in str(info.value)


def test_dataset_url_uses_the_website() -> None:
    settings = ConnectionSettings.from_fields("c", None, None, {"website_url": "https://web.example.org/"})
    assert settings.dataset_url("abc") == "https://web.example.org/dataset/abc"


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        pytest.param('{"refresh_token": "abc",}', "not valid JSON", id="trailing-comma"),
        pytest.param("refresh_token=abc", "not valid JSON", id="not-json"),
        pytest.param('["abc"]', "not an object", id="a-list"),
    ],
)
def test_an_extra_that_is_not_a_json_object_is_named_as_the_problem(
    monkeypatch: pytest.MonkeyPatch, extra: str, problem: str
) -> None:
    """Issue 13 #9: before, Airflow read it as {} and the hook said "no credentials, run login"."""
    import json

    from airflow_provider_iceprod.hooks.iceprod import IceProdHook

    conn = {"conn_type": "iceprod", "host": "http://127.0.0.1:9", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_ICEPROD_BROKEN", json.dumps(conn))
    with pytest.raises(IceProdConfigError) as info:
        IceProdHook("iceprod_broken").settings  # noqa: B018
    assert info.value.field == "extra"
    assert problem in str(info.value) and "'iceprod_broken'" in str(info.value)
    assert "abc" not in str(info.value)  # the extra may hold a token: never echoed
