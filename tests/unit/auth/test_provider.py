"""TokenProvider: rotation and the overlay, dead credentials, and secrets."""

from __future__ import annotations

import dataclasses
import logging
import sys
import time

import pytest
from auth_helpers import FAST_RETRY, closed_port_url, settings_for

from airflow_provider_iceprod.auth.cache import TokenCache
from airflow_provider_iceprod.auth.provider import TokenProvider
from airflow_provider_iceprod.auth.state import MemoryTokenStateStore, VariableTokenStateStore
from airflow_provider_iceprod.auth.tokens import TokenState, fingerprint
from airflow_provider_iceprod.exceptions import IceProdAuthError, IceProdConfigError, IceProdTransientError
from airflow_provider_iceprod.settings import ConnectionSettings
from airflow_provider_iceprod.testing import LocalIceProd


class HidingStore(MemoryTokenStateStore):
    """An overlay whose first read misses the newest state (another worker's write still in flight)."""

    def __init__(self, state: TokenState | None = None, hide_first: int = 1) -> None:
        super().__init__(state)
        self.hide_first = hide_first
        self.loads = 0

    def load(self) -> TokenState | None:
        self.loads += 1
        return None if self.loads <= self.hide_first else self.state


def test_rotation_is_saved_to_the_overlay_before_use(rotating_idp: LocalIceProd) -> None:
    ip = rotating_idp
    base = ip.issue_refresh_token("alice")
    store = MemoryTokenStateStore()
    p = TokenProvider(settings_for(ip, base), retry=FAST_RETRY, state_store=store)
    p.get_token()
    assert store.state is not None and store.state.refresh_token != base
    assert store.state.fingerprint_of_base == fingerprint(base)
    assert store.state.issuer == ip.issuer_url and store.state.client_id == "iceprod-public"
    assert not ip.refresh_token_is_valid(base)  # single-use: the base token is spent
    assert ip.refresh_token_is_valid(store.state.refresh_token)
    # keep refreshing: each rotation lands in the overlay
    for _ in range(3):
        p.get_token(force_refresh=True)
        assert ip.refresh_token_is_valid(store.state.refresh_token)
    assert store.saves == 4


def login(ip: LocalIceProd) -> tuple[ConnectionSettings, MemoryTokenStateStore]:
    """A connection logged in as alice, and an empty overlay shared by every "process" of the test."""
    return settings_for(ip, ip.issue_refresh_token("alice")), MemoryTokenStateStore()


def another_process(settings: ConnectionSettings, store: MemoryTokenStateStore) -> TokenProvider:
    """A new process: its own token cache, the same connection and overlay."""
    return TokenProvider(settings, retry=FAST_RETRY, state_store=store, cache=TokenCache())


def without_access(store: MemoryTokenStateStore) -> MemoryTokenStateStore:
    """The same overlay with no shared access token (one saved before sharing, or an expired one)."""
    assert store.state is not None
    return MemoryTokenStateStore(dataclasses.replace(store.state, access_token=""))


def test_a_new_process_prefers_the_newer_overlay(rotating_idp: LocalIceProd) -> None:
    ip = rotating_idp
    settings, store = login(ip)
    TokenProvider(settings, retry=FAST_RETRY, state_store=store).get_token()
    # "another process": its own cache, the same connection (spent base token) and overlay
    other = TokenProvider(settings, retry=FAST_RETRY, state_store=without_access(store), cache=TokenCache())
    other.get_token()
    assert other.status().refresh_source == "overlay"
    assert ip.counters.grant_requests["refresh_token"] == 2  # no invalid_grant on the way


def test_a_new_process_takes_over_the_fresh_shared_access_token(rotating_idp: LocalIceProd) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    ip = rotating_idp
    settings, store = login(ip)
    first = TokenProvider(settings, retry=FAST_RETRY, state_store=store).get_token()
    assert store.state is not None and store.state.access_token == first
    # a burst of new task processes: each its own cache, all one overlay
    others = [another_process(settings, store) for _ in range(8)]
    assert {p.get_token() for p in others} == {first}
    assert ip.counters.grant_requests["refresh_token"] == 1  # one grant for nine processes
    entry = others[0]._cache.entry(others[0].key)
    assert entry.adopted == 1 and entry.grants == 0 and entry.source == "overlay"
    assert entry.refresh_token == store.state.refresh_token  # its next refresh uses the newest token
    assert redact(f"value: {first}") == "value: ***"
    # when the shared token ages, the next refresh rotates the newest refresh token: no invalid_grant
    others[0].get_token(force_refresh=True)
    assert ip.counters.grant_requests["refresh_token"] == 2
    assert ip.counters.grants["refresh_token"] == 2


def test_an_invalidated_token_is_not_taken_over_again(rotating_idp: LocalIceProd) -> None:
    ip = rotating_idp
    settings, store = login(ip)
    p = TokenProvider(settings, retry=FAST_RETRY, state_store=store)
    rejected = p.get_token()
    p.invalidate()  # the API said "authentication failed" to it (rest-tools client path)
    assert p.get_token() != rejected
    assert ip.counters.grants["refresh_token"] == 2


def test_a_forced_refresh_never_takes_over_the_shared_token(rotating_idp: LocalIceProd) -> None:
    ip = rotating_idp
    settings, store = login(ip)
    rejected = TokenProvider(settings, retry=FAST_RETRY, state_store=store).get_token()
    other = another_process(settings, store)
    assert other.get_token(force_refresh=True) != rejected  # the API said no to it: get a new one
    assert ip.counters.grants["refresh_token"] == 2


@pytest.mark.parametrize("left", [-10.0, 30.0])  # expired; inside its lead time (300 s tokens: 75 s)
def test_a_shared_token_that_is_not_fresh_is_not_taken_over(rotating_idp: LocalIceProd, left: float) -> None:
    ip = rotating_idp
    settings, store = login(ip)
    shared = TokenProvider(settings, retry=FAST_RETRY, state_store=store).get_token()
    assert store.state is not None
    now = time.time()
    store.state = dataclasses.replace(
        store.state, access_expires_at=now + left, access_obtained_at=now + left - 300
    )
    other = another_process(settings, store)
    assert other.get_token() != shared
    assert ip.counters.grants["refresh_token"] == 2


def test_an_older_overlay_than_this_process_holds_is_not_taken_over(rotating_idp: LocalIceProd) -> None:
    ip = rotating_idp
    settings, store = login(ip)
    p = TokenProvider(settings, retry=FAST_RETRY, state_store=store)
    p.get_token()
    old = store.state
    p.get_token(force_refresh=True)  # this process is one rotation further
    p.invalidate()
    store.state = old  # a stale copy (e.g. a lagging read)
    p.get_token()
    assert ip.counters.grants["refresh_token"] == 3  # refreshed with its own newer token, no takeover


def test_overlay_older_than_the_connection_is_ignored(idp: LocalIceProd) -> None:
    stale = TokenState("not-a-valid-token", time.time() - 3600, idp.issuer_url, "iceprod-public", "")
    p = TokenProvider(
        settings_for(idp, idp.issue_refresh_token("alice")),
        retry=FAST_RETRY,
        state_store=MemoryTokenStateStore(stale),
    )
    p.get_token()
    assert p.status().refresh_source == "connection"


def test_overlay_of_another_issuer_is_ignored(idp: LocalIceProd) -> None:
    other = TokenState("not-a-valid-token", time.time() + 60, "https://elsewhere/realm", "iceprod-public", "")
    p = TokenProvider(
        settings_for(idp, idp.issue_refresh_token("alice")),
        retry=FAST_RETRY,
        state_store=MemoryTokenStateStore(other),
    )
    p.get_token()
    assert p.status().refresh_source == "connection"


def test_invalid_grant_takes_over_the_winners_access_token(rotating_idp: LocalIceProd) -> None:
    ip = rotating_idp
    settings = settings_for(ip, ip.issue_refresh_token("alice"))
    shared = MemoryTokenStateStore()
    winner = TokenProvider(settings, retry=FAST_RETRY, state_store=shared).get_token()  # host A rotates
    hiding = HidingStore(shared.state)  # host B does not see A's write at first
    b = TokenProvider(settings, retry=FAST_RETRY, state_store=hiding, cache=TokenCache())
    assert b.get_token() == winner
    assert ip.counters.grant_requests["refresh_token"] == 2  # A, B's invalid_grant; no second rotation
    assert ip.counters.grants["refresh_token"] == 1
    assert ip.refresh_token_is_valid(hiding.state.refresh_token)


def test_invalid_grant_rereads_the_overlay_and_retries(rotating_idp: LocalIceProd) -> None:
    ip = rotating_idp
    settings = settings_for(ip, ip.issue_refresh_token("alice"))
    shared = MemoryTokenStateStore()
    TokenProvider(settings, retry=FAST_RETRY, state_store=shared).get_token()  # worker A rotates
    hiding = HidingStore(without_access(shared).state)  # B does not see A's write at first
    b = TokenProvider(settings, retry=FAST_RETRY, state_store=hiding, cache=TokenCache())
    b.get_token()
    assert ip.counters.grant_requests["refresh_token"] == 3  # A, B's invalid_grant, B's retry
    assert ip.counters.grants["refresh_token"] == 2
    assert hiding.loads == 2
    assert ip.refresh_token_is_valid(hiding.state.refresh_token)


def test_invalid_grant_without_a_newer_overlay_fails_naming_login(rotating_idp: LocalIceProd) -> None:
    ip = rotating_idp
    token = ip.issue_refresh_token("alice")
    ip.revoke_refresh_token(token)
    store = MemoryTokenStateStore()
    started = time.monotonic()
    with pytest.raises(IceProdAuthError) as info:
        TokenProvider(settings_for(ip, token), retry=FAST_RETRY, state_store=store).get_token()
    assert time.monotonic() - started < 10
    assert "airflow-iceprod login --conn-id iceprod_test" in str(info.value)
    assert token not in str(info.value)
    assert ip.counters.grant_requests["refresh_token"] == 1


def test_non_rotating_issuer_keeps_working_without_persistence(idp: LocalIceProd, caplog) -> None:
    # Keycloak's default: every refresh returns a new refresh token and the old one stays valid.
    base = idp.issue_refresh_token("alice")
    p = TokenProvider(
        settings_for(idp, base), retry=FAST_RETRY, state_store=VariableTokenStateStore("iceprod_test")
    )
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            p.get_token(force_refresh=True)
    assert idp.refresh_token_is_valid(base)
    # No Airflow task context here: the overlay cannot be written; a warning, never the token.
    assert "could not be saved" in caplog.text
    assert p._cache.entry(p.key).refresh_token not in caplog.text


def test_single_use_tokens_survive_in_memory_without_persistence(rotating_idp: LocalIceProd) -> None:
    ip = rotating_idp
    p = TokenProvider(
        settings_for(ip, ip.issue_refresh_token("alice")),
        retry=FAST_RETRY,
        state_store=VariableTokenStateStore("x"),
    )
    for _ in range(3):
        p.get_token(force_refresh=True)
    assert ip.counters.grants["refresh_token"] == 3


async def test_async_rotation_and_reread(rotating_idp: LocalIceProd) -> None:
    ip = rotating_idp
    settings = settings_for(ip, ip.issue_refresh_token("alice"))
    shared = MemoryTokenStateStore()
    winner = await TokenProvider(settings, retry=FAST_RETRY, state_store=shared).aget_token()
    hiding = HidingStore(without_access(shared).state)
    b = TokenProvider(settings, retry=FAST_RETRY, state_store=hiding, cache=TokenCache())
    await b.aget_token()
    assert (await b.aidentity()).username == "alice"
    assert ip.counters.grants["refresh_token"] == 2
    # with the access token shared, a third process takes it over after its invalid_grant
    c = TokenProvider(settings, retry=FAST_RETRY, state_store=HidingStore(shared.state), cache=TokenCache())
    assert await c.aget_token() == winner
    assert ip.counters.grants["refresh_token"] == 2


def test_revoked_token_fails_clearly_in_bounded_time_without_prompt(idp: LocalIceProd, monkeypatch) -> None:
    token = idp.issue_refresh_token("alice")
    idp.revoke_refresh_token(token)
    monkeypatch.setattr(sys, "stdin", None)  # any prompt would crash, not hang
    started = time.monotonic()
    with pytest.raises(IceProdAuthError) as info:
        TokenProvider(
            settings_for(idp, token), retry=FAST_RETRY, state_store=MemoryTokenStateStore()
        ).get_token()
    assert time.monotonic() - started < 10
    assert "airflow-iceprod login" in str(info.value)
    assert idp.counters.grants["device_code"] == 0
    assert idp.counters.matching("auth/device") == 0


def test_missing_credentials_name_the_login_command(idp: LocalIceProd) -> None:
    p = TokenProvider(settings_for(idp, None, conn_id="nocreds"), retry=FAST_RETRY)
    with pytest.raises(IceProdAuthError) as info:
        p.get_token()
    assert "airflow-iceprod login --conn-id nocreds" in str(info.value)
    assert idp.counters.total() == 0  # nothing was sent


async def test_missing_credentials_async(idp: LocalIceProd) -> None:
    with pytest.raises(IceProdAuthError):
        await TokenProvider(settings_for(idp, None), retry=FAST_RETRY).aget_token()


@pytest.mark.parametrize(
    ("field", "value"), [("oauth_url", "ftp://issuer"), ("host", "ftp://api.example.org")]
)
def test_bad_urls_are_config_errors_naming_the_field(field: str, value: str) -> None:
    extra = {"oauth_url": value} if field == "oauth_url" else {}
    with pytest.raises(IceProdConfigError) as info:
        ConnectionSettings.from_fields(
            "c", value if field == "host" else None, None, {**extra, "refresh_token": "t"}
        )
    assert info.value.field == field


def test_unreachable_issuer_from_the_provider(idp: LocalIceProd) -> None:
    settings = settings_for(idp, "some-refresh-token", oauth_url=closed_port_url())
    with pytest.raises(IceProdTransientError) as info:
        TokenProvider(settings, retry=FAST_RETRY, state_store=MemoryTokenStateStore()).get_token()
    assert getattr(info.value, "attempts", None)  # final: the API request around it is not re-run


def test_client_credentials_connection(idp: LocalIceProd) -> None:
    settings = settings_for(
        idp, None, password=idp.service_client_secret, client_id=idp.service_client_id, conn_id="svc"
    )
    p = TokenProvider(settings, retry=FAST_RETRY)
    assert p.state_store is None
    for _ in range(50):
        p.get_token()
    assert p.identity().username == "iceprod-system"  # IceProd's owner for a system token
    assert idp.counters.grants["client_credentials"] == 1
    assert idp.counters.grants["refresh_token"] == 0


def test_tokens_are_registered_with_the_secret_masker(rotating_idp: LocalIceProd) -> None:
    from airflow.sdk._shared.secrets_masker import redact

    ip = rotating_idp
    base = ip.issue_refresh_token("alice")
    store = MemoryTokenStateStore()
    p = TokenProvider(settings_for(ip, base), retry=FAST_RETRY, state_store=store)
    access = p.get_token()
    assert store.state is not None
    for secret in (access, base, store.state.refresh_token):
        assert redact(f"value: {secret}") == "value: ***"


def test_no_token_in_reprs(rotating_idp: LocalIceProd) -> None:
    ip = rotating_idp
    base = ip.issue_refresh_token("alice")
    store = MemoryTokenStateStore()
    p = TokenProvider(settings_for(ip, base), retry=FAST_RETRY, state_store=store)
    access = p.get_token()
    entry = p._cache.entry(p.key)
    from airflow_provider_iceprod.auth.candidates import Candidate
    from airflow_provider_iceprod.cli import StoredConnection

    candidate = Candidate(base, 1.0, "connection")
    stored = StoredConnection("c", password=access, extra={"refresh_token": base})
    for obj in (p, p.settings, entry, entry.access, store.state, p.status(), p.oidc, candidate, stored):
        text = repr(obj)
        assert base not in text and access not in text and store.state.refresh_token not in text


def test_rest_tools_logger_is_kept_above_debug() -> None:
    assert logging.getLogger("rest_tools").getEffectiveLevel() >= logging.WARNING
