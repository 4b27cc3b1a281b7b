"""``airflow_provider_iceprod.retry``: the one retry policy (pure) and how the transport applies it."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_iceprod.exceptions import IceProdTransientError
from airflow_provider_iceprod.retry import RetrySettings

ROUTE = r"GET /datasets/\{dataset_id\}$"


def test_retry_module_is_pure() -> None:
    """Triggers import the policy: it adds no HTTP client, no tenacity, no transport on import."""
    code = (
        "import sys; import airflow_provider_iceprod.exceptions; before = set(sys.modules); "
        "import airflow_provider_iceprod.retry; print(sorted(set(sys.modules) - before))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['airflow_provider_iceprod.retry']"
    source = (Path(__file__).parents[2] / "airflow_provider_iceprod" / "retry.py").read_text()
    assert "import httpx" not in source


@pytest.mark.parametrize("attempt", [1, 2, 3, 6])
def test_retry_after_zero_never_goes_below_the_backoff_floor(attempt: int) -> None:
    """Issue 13 #7: ``Retry-After: 0`` does not mean "re-send at once"."""
    settings = RetrySettings(retry_delay=1.0, max_delay=60.0)
    zero = IceProdTransientError("503 server overloaded", retry_after=0)
    waits = [settings.wait_for(zero, attempt) for _ in range(200)]
    assert min(waits) >= settings.floor(attempt) > 0
    assert max(waits) <= settings.ceiling(attempt)
    assert len(set(waits)) > 100  # still jittered: clients that failed together spread out


def test_a_longer_retry_after_wins_over_the_backoff() -> None:
    settings = RetrySettings(retry_delay=0.1, retry_after_cap=30)
    assert settings.wait_for(IceProdTransientError("x", retry_after=7), 1) == 7


@pytest.fixture
def hook(iceprod_connection, monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator:
    from airflow_provider_iceprod.hooks.iceprod import IceProdHook

    monkeypatch.setenv("AIRFLOW_ICEPROD_LOCK_DIR", str(tmp_path / "locks"))
    hook = IceProdHook(retry_limit=3, retry_delay=0.05, timeout=5)
    hook.token_provider.get_token()
    yield hook


def test_a_retry_after_zero_storm_is_spread_over_the_backoff(
    hook, iceprod_connection, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 13 #7 end to end: each logged wait is at least the floor (0.025, 0.05, 0.1 s)."""
    ip = iceprod_connection
    dataset_id = ip.create_dataset({"version": 3.2, "tasks": []}, description="storm")
    ip.faults.add(ROUTE, status=503, retry_after=0, times=3)
    with caplog.at_level("WARNING", logger="airflow_provider_iceprod.transport"):
        assert hook.get_dataset(dataset_id).dataset_id == dataset_id
    waits = [
        float(m.group(1)) for r in caplog.records if (m := re.search(r"in ([0-9.]+) s$", r.getMessage()))
    ]
    floors = [hook.retry_settings.floor(n) for n in (1, 2, 3)]
    assert len(waits) == 3
    assert all(wait >= round(floor, 2) for wait, floor in zip(waits, floors, strict=True)), waits
