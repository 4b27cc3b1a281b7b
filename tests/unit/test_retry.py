"""``airflow_provider_iceprod.retry``: the one retry policy (pure) and how the transport applies it."""

from __future__ import annotations

import email.utils
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_iceprod.exceptions import (
    IceProdAmbiguousError,
    IceProdConfigError,
    IceProdNotFoundError,
    IceProdTransientError,
)
from airflow_provider_iceprod.hooks.iceprod import IceProdHook
from airflow_provider_iceprod.retry import RetrySettings, is_retryable, parse_retry_after

ROUTE = r"GET /datasets/\{dataset_id\}$"


def test_retry_settings_round_trip_through_plain_dict() -> None:
    settings = RetrySettings(retry_limit=2, retry_delay=0.5, max_delay=7, retry_after_cap=9, timeout=12)
    data = settings.to_dict()
    assert data == {
        "retry_limit": 2,
        "retry_delay": 0.5,
        "max_delay": 7.0,
        "retry_after_cap": 9.0,
        "timeout": 12.0,
    }
    assert json.loads(json.dumps(data)) == data  # serializable for trigger kwargs
    assert RetrySettings.from_dict(json.loads(json.dumps(data))) == settings


def test_hook_exposes_plain_retry_settings_without_io() -> None:
    hook = IceProdHook("no_such_connection", retry_limit=1, retry_delay=0.1, timeout=3)
    assert hook.retry_settings.to_dict()["retry_limit"] == 1
    assert "settings" not in hook.__dict__  # nothing resolved yet


def test_attempts_count_the_first_try() -> None:
    assert RetrySettings(retry_limit=2).attempts == 3


def test_hook_takes_the_five_retry_settings() -> None:
    hook = IceProdHook(retry_limit=2, retry_delay=0.5, max_delay=7, retry_after_cap=9, timeout=12)
    assert hook.retry_settings == RetrySettings(2, 0.5, 7, 9, 12)


@pytest.mark.parametrize(
    "settings",
    [
        {"retry_limit": -1},
        {"retry_limit": 1.5},
        {"timeout": 0},
        {"retry_delay": "1"},
        {"max_delay": float("inf")},
        {"retry_after_cap": True},
    ],
)
def test_bad_retry_settings_fail_clearly(settings: dict) -> None:
    with pytest.raises(IceProdConfigError) as info:
        RetrySettings(**settings)
    text = str(info.value).lower()
    assert "retry" in text and next(iter(settings)) in text


def test_unknown_key_lists_known_ones() -> None:
    with pytest.raises(IceProdConfigError, match="Unknown retry setting"):
        RetrySettings.from_dict({"retry_limit": 1, "multiplier": 2})
    with pytest.raises(TypeError):
        IceProdHook(retry_args={"stop_after_attempt": 3})  # type: ignore[call-arg]


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = time.time()
    in_ten = email.utils.formatdate(now + 10, usegmt=True)
    assert parse_retry_after(in_ten, now=now) == pytest.approx(10, abs=1)
    past = email.utils.formatdate(now - 100, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


def test_wait_honours_retry_after_up_to_the_cap() -> None:
    settings = RetrySettings(retry_delay=0.1, max_delay=60, retry_after_cap=5)
    assert settings.wait_for(IceProdTransientError("x", retry_after=2), 1) == 2
    assert settings.wait_for(IceProdTransientError("x", retry_after=500), 1) == 5


def test_backoff_is_jittered_exponential_between_floor_and_ceiling() -> None:
    settings = RetrySettings(retry_delay=1.0, max_delay=4.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0)]:
        waits = [settings.backoff(attempt) for _ in range(200)]
        assert all(ceiling / 2 <= w <= ceiling for w in waits)
        assert max(waits) - min(waits) > ceiling / 4  # jitter spreads the clients


def test_predicate_retries_fresh_transient_errors_only() -> None:
    assert is_retryable(IceProdTransientError("503"))
    assert not is_retryable(IceProdAmbiguousError("lost answer to a submit"))
    assert not is_retryable(IceProdNotFoundError("404"))
    spent = IceProdTransientError("token endpoint down")
    spent.attempts = 6  # type: ignore[attr-defined]  # already retried by a nested transport
    assert not is_retryable(spent)


def test_hook_rejects_bad_poll_interval() -> None:
    with pytest.raises(IceProdConfigError, match="poll_interval"):
        IceProdHook(poll_interval=0)


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
