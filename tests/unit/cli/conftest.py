"""Fixtures shared by the CLI tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from airflow_processes import BIN


@pytest.fixture
def env(airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The test session's AIRFLOW_HOME and DB, a private lock dir, and no stray connections.

    Returned as a dict for subprocesses; also applied to this process for in-process ``main()`` calls.
    """
    from airflow_provider_iceprod.auth.cache import TOKEN_CACHE
    from airflow_provider_iceprod.auth.oidc import clear_discovery_cache

    for key in [k for k in os.environ if k.startswith("AIRFLOW_CONN_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("AIRFLOW_ICEPROD_LOCK_DIR", str(tmp_path / "locks"))
    out = dict(os.environ)
    out["PATH"] = f"{BIN}{os.pathsep}{out.get('PATH', '')}"
    TOKEN_CACHE.clear()
    clear_discovery_cache()
    yield out
    TOKEN_CACHE.clear()
    clear_discovery_cache()
