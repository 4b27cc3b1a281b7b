"""Token records and the token-state overlay, found weak by `make mutation` (mutmut on auth/tokens.py).

All pure: which access token is still fresh (the lead rule), when an overlay replaces another (never
backwards), what a stored overlay parses to (a masked ``***`` from Airflow's UI is not a token), and
what the records show and hide.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging

import pytest

from airflow_provider_iceprod.auth import tokens
from airflow_provider_iceprod.auth.tokens import (
    AccessToken,
    GrantResult,
    TokenState,
    decode_claims,
    fingerprint,
    identity_from_claims,
    login_command,
    mask_token,
)


def _jwt(claims: object) -> str:
    """An unsigned JWT of ``claims`` (the payload without base64 padding, as issuers write it)."""
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJub25lIn0.{payload}.sig"


def _state(**changes: object) -> TokenState:
    fields: dict[str, object] = {
        "refresh_token": "r1",
        "saved_at": 10.0,
        "issuer": "https://issuer",
        "client_id": "iceprod-public",
        "fingerprint_of_base": "base",
        "generation": 1,
        "base_saved_at": 5.0,
    }
    fields.update(changes)
    return TokenState(**fields)  # type: ignore[arg-type]


# --- small helpers ---------------------------------------------------------------------------------


def test_the_login_command_names_the_connection() -> None:
    assert login_command("iceprod_prod") == "airflow-iceprod login --conn-id iceprod_prod"


def test_a_fingerprint_is_the_start_of_the_sha256_and_empty_for_no_secret() -> None:
    assert fingerprint("secret") == hashlib.sha256(b"secret").hexdigest()[:16]
    assert len(fingerprint("secret")) == 16
    assert fingerprint("secret") != fingerprint("secret2")
    assert fingerprint("") == ""
    assert fingerprint(None) == ""


def test_decode_claims_reads_an_unpadded_payload_and_nothing_else() -> None:
    # payload lengths that need 0, 1 and 2 padding characters all decode
    for claims in ({"exp": 1}, {"exp": 12}, {"exp": 123}, {"sub": "alice", "exp": 1700000000}):
        assert decode_claims(_jwt(claims)) == claims
    assert decode_claims("opaque-token") == {}
    assert decode_claims("a.b") == {}
    assert decode_claims(_jwt({"exp": 1}) + ".extra") == {}  # four parts: not a JWT
    assert decode_claims("a.!!!notbase64!!!.c") == {}
    assert decode_claims("a." + base64.urlsafe_b64encode(b"not json").decode() + ".c") == {}
    assert decode_claims(_jwt([1, 2])) == {}  # JSON, but not an object
    assert decode_claims(_jwt("text")) == {}


def test_identity_prefers_the_system_role_then_username_then_sub() -> None:
    system = {"resource_access": {"iceprod": {"roles": ["iceprod-system"]}}, "preferred_username": "svc"}
    assert identity_from_claims(system).username == "iceprod-system"
    other_role = {"resource_access": {"iceprod": {"roles": ["user"]}}, "preferred_username": "bob"}
    assert identity_from_claims(other_role).username == "bob"
    assert identity_from_claims({"resource_access": "x", "sub": "s"}).username == "s"
    assert identity_from_claims({"resource_access": {"iceprod": "x"}, "sub": "s"}).username == "s"
    roles_not_list = {"resource_access": {"iceprod": {"roles": "iceprod-system"}}, "sub": "s"}
    assert identity_from_claims(roles_not_list).username == "s"
    assert identity_from_claims({"preferred_username": "alice", "sub": "uuid"}).username == "alice"
    assert identity_from_claims({"preferred_username": "", "sub": "uuid"}).username == "uuid"
    assert identity_from_claims({}).username == ""


def test_identity_groups_are_a_tuple_of_strings_even_from_one_string() -> None:
    assert identity_from_claims({"groups": ["/a", "/b"]}).groups == ("/a", "/b")
    assert identity_from_claims({"groups": "/a"}).groups == ("/a",)
    assert identity_from_claims({"groups": [1]}).groups == ("1",)
    assert identity_from_claims({"groups": None}).groups == ()
    assert identity_from_claims({}).groups == ()


# --- access tokens: expiry and the lead rule -------------------------------------------------------


def test_expiry_comes_from_expires_in_then_the_jwt_lifetime_then_five_minutes() -> None:
    value = _jwt({"exp": 2000, "iat": 1000, "sub": "alice"})
    token = AccessToken.from_response(value, 60, now=100.0)
    assert (token.expires_at, token.obtained_at) == (160.0, 100.0)
    assert token.claims["sub"] == "alice"
    assert token.identity.username == "alice"
    assert AccessToken.from_response(value, "90", now=100.0).expires_at == 190.0
    # no (usable) expires_in: the JWT's own lifetime, not its absolute exp (clock skew)
    assert AccessToken.from_response(value, None, now=100.0).expires_at == 1100.0
    assert AccessToken.from_response(value, "soon", now=100.0).expires_at == 1100.0
    # an exp not after iat, or missing/odd claims: five minutes
    assert AccessToken.from_response(_jwt({"exp": 1000, "iat": 1000}), None, now=0.0).expires_at == 300.0
    assert AccessToken.from_response(_jwt({"exp": 1000, "iat": "x"}), None, now=0.0).expires_at == 300.0
    assert AccessToken.from_response(_jwt({"exp": "x", "iat": 1}), None, now=0.0).expires_at == 300.0
    assert AccessToken.from_response(_jwt({"iat": 1}), None, now=0.0).expires_at == 300.0
    assert AccessToken.from_response("opaque", None, now=0.0).expires_at == 300.0
    # a negative lifetime is an already expired token, never one from the past
    assert AccessToken.from_response("opaque", -50, now=100.0).expires_at == 100.0


def test_without_now_the_expiry_is_counted_from_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens.time, "time", lambda: 5000.0)
    token = AccessToken.from_response("opaque", 60, now=None)
    assert (token.expires_at, token.obtained_at) == (5060.0, 5000.0)
    assert token.seconds_left() == 60.0
    assert token.seconds_left(5030.0) == 30.0
    assert token.is_fresh(10.0)
    monkeypatch.setattr(tokens.time, "time", lambda: 5055.0)
    assert not token.is_fresh(10.0)


def test_the_lead_is_capped_at_a_quarter_of_the_lifetime() -> None:
    hour = AccessToken(value="t", expires_at=3600.0, obtained_at=0.0)
    assert hour.lead(tokens.DEFAULT_LEAD_TIME) == 120.0
    eight = AccessToken(value="t", expires_at=108.0, obtained_at=100.0)
    assert eight.lead(120.0) == 2.0
    assert eight.lead(1.0) == 1.0
    # a token "obtained" after its expiry has no lifetime, so no lead
    assert AccessToken(value="t", expires_at=100.0, obtained_at=200.0).lead(120.0) == 0.0


def test_a_token_is_fresh_while_more_than_its_lead_is_left() -> None:
    hour = AccessToken(value="t", expires_at=3600.0, obtained_at=0.0)
    assert hour.is_fresh(120.0, now=3479.0)
    assert not hour.is_fresh(120.0, now=3480.0)  # exactly the lead left: renew
    assert not hour.is_fresh(120.0, now=3600.0)
    eight = AccessToken(value="t", expires_at=108.0, obtained_at=100.0)
    assert eight.is_fresh(120.0, now=105.9)  # 2.1 s left, lead capped at 2 s
    assert not eight.is_fresh(120.0, now=106.0)


def test_records_never_show_their_secrets() -> None:
    token = AccessToken(value="ACCESS-SECRET", expires_at=1.0, obtained_at=0.0)
    grant = GrantResult(access_token=token, refresh_token="REFRESH-SECRET")
    state = _state(refresh_token="REFRESH-SECRET", access_token="ACCESS-SECRET")
    for record in (token, grant, state):
        assert "SECRET" not in repr(record)


def test_a_grant_lists_its_secrets_refresh_token_first() -> None:
    token = AccessToken(value="a", expires_at=1.0, obtained_at=0.0)
    assert GrantResult(access_token=token, refresh_token="r").secrets() == ["r", "a"]
    assert GrantResult(access_token=token).secrets() == ["a"]
    assert GrantResult(access_token=None, refresh_token="r").secrets() == ["r"]
    assert GrantResult(access_token=None).secrets() == []
    grant = GrantResult(access_token=None)
    assert (grant.refresh_token, grant.refresh_expires_in, grant.scope) == (None, None, "")


# --- the overlay: written, read back, shared access token ------------------------------------------


def test_an_overlay_round_trips_with_its_access_token() -> None:
    state = _state(access_token="acc", access_expires_at=500.0, access_obtained_at=400.0)
    doc = json.loads(state.to_json())
    assert doc == {
        "refresh_token": "r1",
        "saved_at": 10.0,
        "issuer": "https://issuer",
        "client_id": "iceprod-public",
        "fingerprint_of_base": "base",
        "generation": 1,
        "base_saved_at": 5.0,
        "access_token": "acc",
        "access_expires_at": 500.0,
        "access_obtained_at": 400.0,
    }
    assert TokenState.from_json(state.to_json()) == state
    assert TokenState.from_json(state.to_json().encode()) == state
    assert TokenState.from_json(doc) == state


def test_an_overlay_without_access_token_stores_no_access_fields() -> None:
    doc = json.loads(_state(access_expires_at=500.0).to_json())
    assert "access_token" not in doc
    assert "access_expires_at" not in doc
    assert "access_obtained_at" not in doc


def test_defaults_and_normalisation_when_reading_an_overlay() -> None:
    state = TokenState.from_json({"refresh_token": "  r1 \n", "issuer": "https://issuer/"})
    assert state == TokenState(refresh_token="r1", saved_at=0.0, issuer="https://issuer", client_id="")
    realm_x = TokenState.from_json({"refresh_token": "r", "issuer": "https://idp/realms/ICEX/"})
    assert realm_x is not None and realm_x.issuer == "https://idp/realms/ICEX"  # only the slash goes
    assert (state.fingerprint_of_base, state.generation, state.base_saved_at) == ("", 0, 0.0)
    assert (state.access_token, state.access_expires_at, state.access_obtained_at) == ("", 0.0, 0.0)
    nulls = {
        "refresh_token": "r",
        "saved_at": None,
        "issuer": None,
        "client_id": None,
        "fingerprint_of_base": None,
        "generation": None,
        "base_saved_at": None,
        "access_token": None,
        "access_expires_at": None,
        "access_obtained_at": None,
    }
    assert TokenState.from_json(nulls) == TokenState(refresh_token="r", saved_at=0.0, issuer="", client_id="")
    typed = TokenState.from_json({"refresh_token": 7, "generation": "3", "saved_at": "2.5"})
    assert typed is not None
    assert (typed.refresh_token, typed.generation, typed.saved_at) == ("7", 3, 2.5)


@pytest.mark.parametrize("masked", ["***", "", "  ***  ", " "])
def test_a_masked_refresh_token_is_ignored_with_a_warning(masked: str, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger=tokens.__name__):
        assert TokenState.from_json({"refresh_token": masked}, where="the Variable x") is None
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert message.startswith("Ignoring the IceProd token-state overlay in the Variable x: its refresh_token")
    assert repr(masked.strip()) in message
    assert "masked value in Airflow's UI" in message


@pytest.mark.parametrize("masked", ["***", " *** ", "", None])
def test_a_masked_shared_access_token_is_read_as_none(masked: str | None) -> None:
    doc = {"refresh_token": "r", "access_token": masked, "access_expires_at": 9e9, "access_obtained_at": 0}
    state = TokenState.from_json(doc)
    assert state is not None
    assert state.access_token == ""
    assert state.shared_access(120.0, now=0.0) is None
    assert TokenState.from_json({**doc, "access_token": " acc "}).access_token == "acc"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "raw",
    ["not json", "[1]", '"text"', "{}", '{"saved_at": 1}', '{"refresh_token": "r", "generation": "x"}'],
)
def test_an_overlay_that_is_not_one_is_ignored_with_a_warning(raw: str, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger=tokens.__name__):
        assert TokenState.from_json(raw) is None
    assert [r.getMessage() for r in caplog.records] == [
        "Ignoring the IceProd token-state overlay: it is not valid JSON of the expected shape"
    ]


def test_nothing_stored_is_no_overlay_and_no_warning(caplog) -> None:
    with caplog.at_level(logging.DEBUG, logger=tokens.__name__):
        assert TokenState.from_json(None) is None
    assert caplog.records == []


def test_the_shared_access_token_is_handed_out_while_fresh() -> None:
    value = _jwt({"sub": "alice"})
    state = _state(access_token=value, access_expires_at=1000.0, access_obtained_at=0.0)
    shared = state.shared_access(120.0, now=879.0)
    assert shared == AccessToken(value=value, expires_at=1000.0, obtained_at=0.0)
    assert shared is not None and shared.claims == {"sub": "alice"}
    assert state.shared_access(120.0, now=880.0) is None  # within the lead of its expiry
    assert _state().shared_access(120.0, now=0.0) is None  # no access token stored
    # the lead is capped by the stored lifetime (obtained_at is kept, not zero)
    short = _state(access_token="a", access_expires_at=108.0, access_obtained_at=100.0)
    assert short.shared_access(120.0, now=105.0) is not None


# --- the overlay never goes backwards --------------------------------------------------------------


def test_an_overlay_supersedes_nothing_and_another_clients_state() -> None:
    state = _state(generation=1)
    assert state.supersedes(None)
    assert state.supersedes(_state(generation=9, issuer="https://other"))
    assert state.supersedes(_state(generation=9, client_id="other"))


def test_within_one_login_only_a_later_generation_supersedes() -> None:
    assert _state(generation=2).supersedes(_state(generation=1))
    assert not _state(generation=1).supersedes(_state(generation=1))
    assert not _state(generation=1).supersedes(_state(generation=2))
    # the login time does not matter within one login
    assert _state(generation=2, base_saved_at=0.0).supersedes(_state(generation=1, base_saved_at=9.0))
    assert not _state(generation=1, base_saved_at=9.0).supersedes(_state(generation=2, base_saved_at=0.0))


def test_across_logins_the_later_or_same_login_time_supersedes() -> None:
    old = _state(fingerprint_of_base="old", generation=7, base_saved_at=5.0)
    new = _state(fingerprint_of_base="new", generation=1, base_saved_at=6.0)
    assert new.supersedes(old)
    assert not old.supersedes(new)
    assert _state(fingerprint_of_base="b", base_saved_at=5.0).supersedes(old)  # same login time


# --- masking ---------------------------------------------------------------------------------------


def test_mask_token_registers_the_token_with_airflows_masker() -> None:
    from airflow.sdk.log import _secrets_masker

    masker = _secrets_masker()
    masker.reset_masker()
    try:
        mask_token("a-secret-token-value")
        assert masker.redact("got a-secret-token-value back") == "got *** back"
        mask_token("")
        mask_token(None)
        assert masker.redact("") == ""
    finally:
        masker.reset_masker()


def test_mask_token_never_breaks_authentication(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    import airflow.sdk.log

    def broken(value: str) -> None:
        raise RuntimeError("masker down")

    monkeypatch.setattr(airflow.sdk.log, "mask_secret", broken)
    with caplog.at_level(logging.DEBUG, logger=tokens.__name__):
        mask_token("value")  # no exception
    assert [r.getMessage() for r in caplog.records] == ["Could not register a token with the secret masker"]
    exc_info = caplog.records[0].exc_info
    assert exc_info and exc_info[0] is RuntimeError  # the traceback is kept (debug level)


def test_mask_token_skips_empty_values(monkeypatch: pytest.MonkeyPatch) -> None:
    import airflow.sdk.log

    seen: list[str] = []
    monkeypatch.setattr(airflow.sdk.log, "mask_secret", seen.append)
    mask_token("")
    mask_token(None)
    mask_token("x")
    assert seen == ["x"]
