"""Fixtures for the credential tests: a fresh token cache, discovery cache and lock dir per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from auth_helpers import FAST_RETRY

from airflow_provider_iceprod.auth.cache import TOKEN_CACHE
from airflow_provider_iceprod.auth.oidc import clear_discovery_cache
from airflow_provider_iceprod.retry import RetrySettings
from airflow_provider_iceprod.testing import LocalIceProd


@pytest.fixture(autouse=True)
def _fresh_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AIRFLOW_ICEPROD_LOCK_DIR", str(tmp_path / "locks"))
    TOKEN_CACHE.clear()
    clear_discovery_cache()
    yield
    TOKEN_CACHE.clear()
    clear_discovery_cache()


@pytest.fixture
def retry() -> RetrySettings:
    return FAST_RETRY


@pytest.fixture
def idp() -> Iterator[LocalIceProd]:
    """The stand-in with fast device polling and auto-approval as alice."""
    with LocalIceProd(auto_approve_as="alice", device_interval=0.1, materialize_interval=None) as server:
        yield server


@pytest.fixture
def rotating_idp() -> Iterator[LocalIceProd]:
    """Single-use refresh tokens (each refresh revokes the token it used)."""
    with LocalIceProd(
        auto_approve_as="alice", device_interval=0.1, rotate_refresh_tokens=True, materialize_interval=None
    ) as server:
        yield server
