"""The masker stays bounded per credential and is never edited on the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_iceprod.auth import masking
from airflow_provider_iceprod.auth import provider as provider_module
from airflow_provider_iceprod.auth.cache import TOKEN_CACHE
from airflow_provider_iceprod.auth.oidc import clear_discovery_cache
from airflow_provider_iceprod.auth.provider import TokenProvider
from airflow_provider_iceprod.auth.state import MemoryTokenStateStore
from airflow_provider_iceprod.retry import RetrySettings
from airflow_provider_iceprod.settings import ConnectionSettings
from airflow_provider_iceprod.testing import LocalIceProd

RETRY = RetrySettings(retry_limit=2, retry_delay=0.01, max_delay=0.05, timeout=5.0)
REFRESHES = 300


def _masker():
    from airflow.sdk.log import _secrets_masker

    return _secrets_masker()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AIRFLOW_ICEPROD_LOCK_DIR", str(tmp_path / "locks"))
    TOKEN_CACHE.clear()
    clear_discovery_cache()
    _masker().reset_masker()
    yield
    TOKEN_CACHE.clear()


@pytest.fixture
def provider() -> Iterator[TokenProvider]:
    with LocalIceProd(rotate_refresh_tokens=True, materialize_interval=None) as ip:
        fields = ip.connection_extra(ip.issue_refresh_token("alice"))
        settings = ConnectionSettings.from_fields("iceprod_mask", ip.api_url, None, fields)
        yield TokenProvider(settings, retry=RETRY, state_store=MemoryTokenStateStore())


def test_refreshing_many_times_keeps_the_masker_bounded(provider: TokenProvider) -> None:
    provider.get_token()
    sizes = []
    for _ in range(REFRESHES):
        access = provider.get_token(force_refresh=True)
        sizes.append(len(_masker().patterns))
    # Before: two new JWT-sized patterns per refresh, never removed (600 here, 20,000 after 10,000).
    assert max(sizes) <= masking.KEEP_PER_CREDENTIAL + 2
    assert sizes[-1] == sizes[len(sizes) // 2]
    assert masking.MASKS.size(provider.key) <= masking.KEEP_PER_CREDENTIAL
    # the tokens in use are still masked
    entry = provider._cache.entry(provider.key)
    for secret in (access, entry.refresh_token):
        assert secret and secret not in _masker().redact(f"leak {secret}")


async def test_the_masker_is_edited_off_the_event_loop(
    provider: TokenProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[int] = set()

    class Recording(masking.MaskRegistry):
        def _register_here(self, key, secrets):  # type: ignore[no-untyped-def]
            threads.add(threading.get_ident())
            return super()._register_here(key, secrets)

    monkeypatch.setattr(provider_module, "MASKS", Recording())
    loop_thread = threading.get_ident()
    for _ in range(5):
        await provider.aget_token(force_refresh=True)
    assert threads and loop_thread not in threads
    assert asyncio.get_running_loop() is not None
