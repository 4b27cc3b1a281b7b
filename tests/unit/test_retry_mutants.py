"""The retry policy, behaviour by behaviour: tests written from the survivors of ``make mutation``
(``retry.py``). Each checks what a user of the provider sees: which settings are accepted, what a bad
one's error says and names, how long a retry waits, what is raised at the end, what is logged."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time

import pytest

from airflow_provider_iceprod.exceptions import (
    IceProdConfigError,
    IceProdNotFoundError,
    IceProdTransientError,
)
from airflow_provider_iceprod.retry import (
    RetrySettings,
    aretrying,
    is_retryable,
    mark_final,
    parse_retry_after,
    retrying,
)

# -- settings -------------------------------------------------------------------------------------


def test_zero_is_a_valid_setting_except_for_the_timeout() -> None:
    """``retry_limit=0`` turns retries off; zero delays and a zero cap are legal too."""
    settings = RetrySettings(retry_limit=0, retry_delay=0, max_delay=0, retry_after_cap=0)
    assert settings.attempts == 1
    assert settings.backoff(3) == 0.0
    assert settings.wait_for(IceProdTransientError("503", retry_after=30), 1) == 0.0


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("retry_limit", 1.5, "must be an integer >= 0"),
        ("retry_limit", -1, "must be an integer >= 0"),
        ("retry_delay", -0.5, "must be a number >= 0"),
        ("max_delay", "60", "must be a number >= 0"),
        ("retry_after_cap", float("nan"), "must be a number >= 0"),
        ("timeout", 0, "must be a number > 0"),
    ],
)
def test_a_bad_setting_names_its_field_and_what_it_must_be(name: str, value: object, expected: str) -> None:
    with pytest.raises(IceProdConfigError) as info:
        RetrySettings(**{name: value})  # type: ignore[arg-type]
    assert info.value.field == name
    assert f"Retry setting {name!r} {expected}" in str(info.value)
    assert repr(value) in str(info.value)


def test_an_unknown_setting_is_reported_on_the_retry_settings_field() -> None:
    with pytest.raises(IceProdConfigError) as info:
        RetrySettings.from_dict({"retry_limit": 1, "multiplier": 2})
    assert info.value.field == "retry_settings"
    assert "['multiplier']" in str(info.value) and "'retry_limit'" in str(info.value)


def test_an_integral_float_retry_limit_is_stored_as_an_integer() -> None:
    """``3.0`` (e.g. from a JSON connection extra) is accepted and crosses into trigger kwargs as ``3``."""
    settings = RetrySettings(retry_limit=3.0, retry_delay=2)  # type: ignore[arg-type]
    assert type(settings.retry_limit) is int and settings.attempts == 4
    assert type(settings.retry_delay) is float
    assert '"retry_limit": 3,' in json.dumps(settings.to_dict())


# -- waits ----------------------------------------------------------------------------------------


def test_the_wait_without_an_error_or_without_retry_after_is_the_backoff() -> None:
    settings = RetrySettings(retry_delay=1.0, max_delay=60.0)
    for exc in (None, ValueError("not an IceProd error"), IceProdTransientError("503")):
        waits = [settings.wait_for(exc, 3) for _ in range(50)]
        assert all(settings.floor(3) <= w <= settings.ceiling(3) for w in waits)


def test_an_http_date_retry_after_is_counted_from_now() -> None:
    """``now`` is the reference when given (a recorded clock), the real clock otherwise."""
    then = 1_000_000_000.0
    date = email.utils.formatdate(then + 30, usegmt=True)
    assert parse_retry_after(date, now=then) == 30.0
    assert parse_retry_after(date, now=then + 50) == 0.0
    assert parse_retry_after(date) == 0.0  # long past by the real clock
    soon = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert parse_retry_after(soon) == pytest.approx(120, abs=5)


# -- the policy applied by tenacity ---------------------------------------------------------------


class Failing:
    """Fails ``times`` times with a 503 carrying ``retry_after``, then answers ``"ok"``."""

    def __init__(self, times: int, retry_after: float | None = None) -> None:
        self.times = times
        self.retry_after = retry_after
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.times:
            raise IceProdTransientError(f"503 overloaded (call {self.calls})", retry_after=self.retry_after)
        return "ok"


def test_the_policy_sleeps_for_the_servers_retry_after(caplog: pytest.LogCaptureFixture) -> None:
    sleeps: list[float] = []
    settings = RetrySettings(retry_limit=3, retry_delay=0.01, retry_after_cap=10)
    policy = retrying(settings, "IceProd").copy(sleep=sleeps.append)
    call = Failing(2, retry_after=4)
    with caplog.at_level(logging.WARNING, logger="airflow_provider_iceprod.transport"):
        assert policy(call) == "ok"
    assert call.calls == 3 and sleeps == [4.0, 4.0]
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "IceProd request failed: 503 overloaded (call 1); retry 1 of 3 in 4.00 s",
        "IceProd request failed: 503 overloaded (call 2); retry 2 of 3 in 4.00 s",
    ]


def test_when_the_attempts_are_spent_the_last_iceprod_error_is_raised() -> None:
    """Not tenacity's ``RetryError``: callers catch IceProd's errors, with IceProd's text."""
    sleeps: list[float] = []
    policy = retrying(RetrySettings(retry_limit=2, retry_delay=0.01), "IceProd").copy(sleep=sleeps.append)
    call = Failing(10)
    with pytest.raises(IceProdTransientError, match=r"^503 overloaded \(call 3\)$"):
        policy(call)
    assert call.calls == 3 and len(sleeps) == 2


def test_a_non_retryable_error_is_raised_at_once() -> None:
    sleeps: list[float] = []
    policy = retrying(RetrySettings(retry_limit=5), "IceProd").copy(sleep=sleeps.append)
    calls = []

    def gone() -> None:
        calls.append(1)
        raise IceProdNotFoundError("404 dataset not found")

    with pytest.raises(IceProdNotFoundError):
        policy(gone)
    assert calls == [1] and sleeps == []


def test_the_async_policy_is_the_same_policy(caplog: pytest.LogCaptureFixture) -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    settings = RetrySettings(retry_limit=2, retry_delay=0.01, retry_after_cap=3)
    policy = aretrying(settings, "OpenID issuer").copy(sleep=sleep)
    call = Failing(10, retry_after=100)

    async def attempt() -> str:
        return call()

    with (
        caplog.at_level(logging.WARNING, logger="airflow_provider_iceprod.transport"),
        pytest.raises(IceProdTransientError, match=r"call 3\)$"),
    ):
        asyncio.run(policy(attempt))
    assert call.calls == 3 and sleeps == [3.0, 3.0]  # Retry-After capped at retry_after_cap
    assert [r.getMessage() for r in caplog.records] == [
        "OpenID issuer request failed: 503 overloaded (call 1); retry 1 of 2 in 3.00 s",
        "OpenID issuer request failed: 503 overloaded (call 2); retry 2 of 2 in 3.00 s",
    ]


# -- final errors ---------------------------------------------------------------------------------


def test_a_final_error_says_how_many_attempts_were_made_and_is_not_retried_again() -> None:
    exc = mark_final(IceProdTransientError("503 overloaded"), 2)
    assert exc.attempts == 2  # type: ignore[attr-defined]
    assert str(exc) == exc.message == "503 overloaded (gave up after 2 attempts)"
    assert exc.args == ("503 overloaded (gave up after 2 attempts)",)
    assert not is_retryable(exc)


def test_an_error_after_a_single_attempt_keeps_its_text() -> None:
    for exc in (
        mark_final(IceProdTransientError("503 overloaded")),
        mark_final(IceProdTransientError("503 overloaded"), 1),
    ):
        assert exc.attempts == 1  # type: ignore[attr-defined]
        assert str(exc) == "503 overloaded" and exc.args == ("503 overloaded",)
        assert not is_retryable(exc)


def test_a_non_transient_error_keeps_iceprods_text_whatever_the_attempts() -> None:
    exc = mark_final(IceProdNotFoundError("404 dataset not found"), 3)
    assert exc.attempts == 3  # type: ignore[attr-defined]
    assert str(exc) == "404 dataset not found"


def test_an_error_marked_by_an_inner_transport_keeps_its_count_and_text() -> None:
    """A token request that gave up inside a dataset request: the outer transport adds nothing."""
    exc = mark_final(IceProdTransientError("token endpoint down"), 6)
    assert mark_final(exc, 3) is exc
    assert exc.attempts == 6  # type: ignore[attr-defined]
    assert str(exc) == "token endpoint down (gave up after 6 attempts)"
