"""Which refresh token is used next, found weak by `make mutation` (mutmut on auth/candidates.py).

All pure: the newest token wins (most rotations since the login), ties prefer this process's memory
then the overlay, an overlay of another login or client never applies, and a rotation is persisted
one generation on with the access token to share.
"""

from __future__ import annotations

import pytest

from airflow_provider_iceprod.auth import candidates
from airflow_provider_iceprod.auth.cache import CacheEntry
from airflow_provider_iceprod.auth.candidates import (
    Candidate,
    choose,
    new_from_overlay,
    overlay_applies,
    remember,
    rotation,
    same_client,
)
from airflow_provider_iceprod.auth.tokens import AccessToken, GrantResult, TokenState
from airflow_provider_iceprod.settings import ConnectionSettings

ISSUER = "https://keycloak.example/realms/IceCube"
CLIENT = "iceprod-public"
BASE = "fp-of-login"


def _settings(refresh_token: str | None = "login", saved_at: float | None = 100.0) -> ConnectionSettings:
    return ConnectionSettings(
        conn_id="iceprod_default",
        api_url="https://iceprod.example",
        actions_url="https://actions.example",
        oauth_url=ISSUER,
        client_id=CLIENT,
        website_url="https://iceprod.example",
        refresh_token=refresh_token,
        refresh_token_saved_at=saved_at,
    )


def _overlay(**changes: object) -> TokenState:
    fields: dict[str, object] = {
        "refresh_token": "overlay-token",
        "saved_at": 200.0,
        "issuer": ISSUER,
        "client_id": CLIENT,
        "fingerprint_of_base": BASE,
        "generation": 2,
        "base_saved_at": 100.0,
    }
    fields.update(changes)
    return TokenState(**fields)  # type: ignore[arg-type]


def _memory(
    token: str | None = "memory-token", generation: int = 0, saved_at: float | None = 300.0
) -> CacheEntry:
    return CacheEntry(refresh_token=token, refresh_saved_at=saved_at, refresh_generation=generation)


def test_a_candidate_hides_its_token_and_an_overlay_candidate_keeps_its_fields() -> None:
    assert "overlay-token" not in repr(Candidate.of_overlay(_overlay()))
    assert Candidate.of_overlay(_overlay()) == Candidate("overlay-token", 200.0, "overlay", 2)
    assert Candidate("t", 1.0, "connection").generation == 0


def test_same_client_needs_the_connections_issuer_and_client() -> None:
    settings = _settings()
    assert same_client(settings, _overlay())
    assert not same_client(settings, None)
    assert not same_client(settings, _overlay(issuer="https://other"))
    assert not same_client(settings, _overlay(client_id="other"))


def test_an_overlay_applies_only_to_the_login_it_descends_from() -> None:
    settings = _settings()
    assert overlay_applies(settings, BASE, _overlay())
    assert not overlay_applies(settings, BASE, _overlay(fingerprint_of_base="another-login"))
    assert not overlay_applies(settings, BASE, None)
    assert not overlay_applies(settings, BASE, _overlay(client_id="other"))
    # a connection without a refresh token of its own takes any overlay of its client
    assert overlay_applies(_settings(refresh_token=None), BASE, _overlay(fingerprint_of_base="x"))
    assert not overlay_applies(_settings(refresh_token=None), BASE, _overlay(issuer="https://other"))


def test_an_overlay_from_before_fingerprints_applies_when_saved_after_the_login() -> None:
    old_style = _overlay(fingerprint_of_base="", saved_at=150.0)
    assert overlay_applies(_settings(saved_at=100.0), BASE, old_style)
    assert not overlay_applies(_settings(saved_at=150.0), BASE, old_style)  # same time: not newer
    assert not overlay_applies(_settings(saved_at=200.0), BASE, old_style)
    assert overlay_applies(_settings(saved_at=None), BASE, old_style)  # login time unknown


def test_choose_takes_the_most_rotated_token() -> None:
    settings = _settings()
    chosen = choose(settings, BASE, _memory(generation=1), _overlay(generation=2))
    assert chosen == Candidate("overlay-token", 200.0, "overlay", 2)
    chosen = choose(settings, BASE, _memory(generation=3), _overlay(generation=2))
    assert chosen == Candidate("memory-token", 300.0, "memory", 3)
    # never backwards to the login's token once a rotation is known
    assert choose(settings, BASE, CacheEntry(), _overlay(generation=1)).source == "overlay"


def test_choose_breaks_ties_memory_then_overlay_then_connection() -> None:
    settings = _settings()
    assert choose(settings, BASE, _memory(generation=2), _overlay(generation=2)).source == "memory"
    assert choose(settings, BASE, CacheEntry(), _overlay(generation=0)).source == "overlay"
    assert choose(settings, BASE, _memory(generation=0), None).source == "memory"
    only = choose(settings, BASE, CacheEntry(), None)
    assert only == Candidate("login", 100.0, "connection", 0)
    # the ranks themselves: memory above overlay above connection
    assert candidates._RANK["memory"] > candidates._RANK["overlay"] > candidates._RANK["connection"]


def test_choose_ignores_an_overlay_that_does_not_apply() -> None:
    settings = _settings()
    foreign = _overlay(fingerprint_of_base="another-login", generation=9)
    assert choose(settings, BASE, CacheEntry(), foreign).source == "connection"


def test_an_overlay_from_before_fingerprints_counts_as_one_rotation() -> None:
    settings = _settings(saved_at=100.0)
    old_style = _overlay(fingerprint_of_base="", generation=0, saved_at=150.0)
    assert choose(settings, BASE, _memory(generation=0), old_style) == Candidate(
        "overlay-token", 150.0, "overlay", 1
    )
    assert choose(settings, BASE, _memory(generation=1), old_style).source == "memory"


def test_missing_save_times_count_as_zero() -> None:
    settings = _settings(saved_at=None)
    assert choose(settings, BASE, CacheEntry(), None) == Candidate("login", 0.0, "connection", 0)
    memory = choose(_settings(refresh_token=None), BASE, _memory(saved_at=None), None)
    assert memory == Candidate("memory-token", 0.0, "memory", 0)


def test_after_invalid_grant_only_an_untried_overlay_token_is_offered() -> None:
    settings = _settings()
    assert new_from_overlay(settings, _overlay(), {"login"}) == Candidate.of_overlay(_overlay())
    assert new_from_overlay(settings, _overlay(), {"login", "overlay-token"}) is None
    assert new_from_overlay(settings, None, set()) is None
    assert new_from_overlay(settings, _overlay(client_id="other"), set()) is None


def test_a_rotation_is_persisted_one_generation_on_with_the_access_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(candidates.time, "time", lambda: 1234.0)
    access = AccessToken(value="access", expires_at=1300.0, obtained_at=1230.0)
    grant = GrantResult(access_token=access, refresh_token="rotated")
    used = Candidate("overlay-token", 200.0, "overlay", 2)
    assert rotation(_settings(), BASE, used, grant) == TokenState(
        refresh_token="rotated",
        saved_at=1234.0,
        issuer=ISSUER,
        client_id=CLIENT,
        fingerprint_of_base=BASE,
        generation=3,
        base_saved_at=100.0,
        access_token="access",
        access_expires_at=1300.0,
        access_obtained_at=1230.0,
    )


def test_a_rotation_without_access_token_or_login_time_stores_zeros() -> None:
    grant = GrantResult(access_token=None, refresh_token="rotated")
    state = rotation(_settings(saved_at=None), BASE, Candidate("login", 0.0, "connection"), grant)
    assert state is not None
    assert (state.generation, state.base_saved_at) == (1, 0.0)
    assert (state.access_token, state.access_expires_at, state.access_obtained_at) == ("", 0.0, 0.0)


def test_no_rotation_when_the_issuer_kept_or_sent_no_refresh_token() -> None:
    access = AccessToken(value="access", expires_at=1.0, obtained_at=0.0)
    used = Candidate("login", 100.0, "connection")
    assert rotation(_settings(), BASE, used, GrantResult(access_token=access)) is None
    assert rotation(_settings(), BASE, used, GrantResult(access_token=access, refresh_token="login")) is None


def test_memory_keeps_the_rotated_token_else_the_one_used() -> None:
    entry = CacheEntry()
    rotated = TokenState(
        refresh_token="rotated", saved_at=50.0, issuer=ISSUER, client_id=CLIENT, generation=4
    )
    remember(entry, Candidate("used", 10.0, "overlay", 3), rotated)
    assert (entry.refresh_token, entry.refresh_saved_at, entry.refresh_generation) == ("rotated", 50.0, 4)
    entry = CacheEntry()
    remember(entry, Candidate("used", 10.0, "overlay", 3), None)
    assert (entry.refresh_token, entry.refresh_saved_at, entry.refresh_generation) == ("used", 10.0, 3)
