"""The retry policy's plain parts: settings, Retry-After parsing, the wait function, the predicate."""

from __future__ import annotations

import email.utils
import json
import time

import pytest

from airflow_provider_iceprod.exceptions import (
    IceProdAmbiguousError,
    IceProdConfigError,
    IceProdNotFoundError,
    IceProdTransientError,
)
from airflow_provider_iceprod.hooks.iceprod import IceProdHook
from airflow_provider_iceprod.transport import RetrySettings, is_retryable, parse_retry_after


def test_retry_settings_round_trip_through_plain_dict() -> None:
    settings = RetrySettings.from_hook_args(2, 0.5, {"wait_max": 7, "retry_after_cap": 9}, 12)
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


def test_stop_after_attempt_counts_total_attempts() -> None:
    settings = RetrySettings.from_hook_args(retry_args={"stop_after_attempt": 3})
    assert settings.retry_limit == 2
    assert settings.attempts == 3


@pytest.mark.parametrize(
    "retry_args",
    [
        {"stop": 3},  # tenacity keyword, not one of ours
        {"wait": object()},
        {"retry_limit": -1},
        {"retry_limit": 1.5},
        {"timeout": 0},
        {"retry_delay": "1"},
        {"stop_after_attempt": 0},
    ],
)
def test_bad_retry_args_fail_clearly(retry_args: dict) -> None:
    with pytest.raises(IceProdConfigError) as info:
        RetrySettings.from_hook_args(retry_args=retry_args)
    text = str(info.value).lower()
    assert "retry" in text and next(iter(retry_args)) in text


def test_unknown_key_lists_known_ones() -> None:
    with pytest.raises(IceProdConfigError, match=r"Known keys: .*stop_after_attempt"):
        RetrySettings.from_hook_args(retry_args={"stop": 3})
    with pytest.raises(IceProdConfigError, match="Unknown retry setting"):
        RetrySettings.from_dict({"retry_limit": 1, "multiplier": 2})


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
    settings = RetrySettings(retry_delay=1.0, max_delay=60, retry_after_cap=5)
    assert settings.wait_for(IceProdTransientError("x", retry_after=2), 1) == 2
    assert settings.wait_for(IceProdTransientError("x", retry_after=500), 1) == 5


def test_backoff_is_full_jitter_exponential_capped() -> None:
    settings = RetrySettings(retry_delay=1.0, max_delay=4.0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0)]:
        waits = [settings.backoff(attempt) for _ in range(200)]
        assert all(0 <= w <= ceiling for w in waits)
        assert max(waits) > ceiling / 2  # jitter spreads over the whole range


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
