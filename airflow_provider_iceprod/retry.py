"""The one retry policy: which errors are retried, how long to wait, when to give up.

Pure: no I/O and no httpx, so triggers import it cheaply (tenacity is imported on first use). The
transport applies it to every request, to IceProd and to the OpenID issuer alike. The contract is
stated in ``docs/architecture.md`` ("Transport, retry policy and authentication").
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

from airflow_provider_iceprod.exceptions import (
    IceProdAmbiguousError,
    IceProdConfigError,
    IceProdError,
    IceProdTransientError,
)

if TYPE_CHECKING:
    import tenacity

log = logging.getLogger("airflow_provider_iceprod.transport")


def _number(name: str, value: Any, *, integer: bool = False, positive: bool = False) -> float | int:
    bad = isinstance(value, bool) or not isinstance(value, int | float)
    if not bad and integer and isinstance(value, float) and not value.is_integer():
        bad = True
    if bad or not math.isfinite(value) or value < 0 or (positive and value == 0):
        kind = "an integer" if integer else "a number"
        limit = "> 0" if positive else ">= 0"
        raise IceProdConfigError(
            f"Retry setting {name!r} must be {kind} {limit} (plain values only, so they can be passed "
            f"to triggers), got {value!r}.",
            field=name,
        )
    return int(value) if integer else float(value)


@dataclass(frozen=True)
class RetrySettings:
    """How requests are retried; plain numbers, so they cross into triggers unchanged.

    Args:
        retry_limit: re-sends after the first attempt (so ``retry_limit + 1`` attempts in all).
        retry_delay: base of the exponential backoff, in seconds.
        max_delay: the backoff never grows past this.
        retry_after_cap: a server's ``Retry-After`` is honoured up to this many seconds.
        timeout: seconds to wait for each answer.
    """

    retry_limit: int = 5
    retry_delay: float = 1.0
    max_delay: float = 60.0
    retry_after_cap: float = 120.0
    timeout: float = 30.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _number(
                f.name, getattr(self, f.name), integer=f.name == "retry_limit", positive=f.name == "timeout"
            )
            object.__setattr__(self, f.name, value)

    @property
    def attempts(self) -> int:
        """Total attempts per request (first try included)."""
        return self.retry_limit + 1

    def to_dict(self) -> dict[str, int | float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RetrySettings:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise IceProdConfigError(
                f"Unknown retry setting(s) {unknown}; known: {sorted(known)}.", field="retry_settings"
            )
        return cls(**dict(data))

    # -- waits ------------------------------------------------------------------------------------

    def ceiling(self, attempt_number: int) -> float:
        """The longest wait after the ``attempt_number``-th failed attempt: ``retry_delay * 2**(n-1)``,
        capped at ``max_delay``."""
        return min(self.max_delay, self.retry_delay * (2 ** max(attempt_number - 1, 0)))

    def floor(self, attempt_number: int) -> float:
        """The shortest wait after the ``attempt_number``-th failed attempt: half the ceiling."""
        return self.ceiling(attempt_number) / 2

    def backoff(self, attempt_number: int) -> float:
        """Exponential backoff with jitter, between :meth:`floor` and :meth:`ceiling`.

        The floor keeps a storm of quick failures from using up every attempt at once; the jitter
        spreads the clients that failed together.
        """
        return random.uniform(self.floor(attempt_number), self.ceiling(attempt_number))

    def wait_for(self, exc: BaseException | None, attempt_number: int) -> float:
        """Seconds before the next attempt: the server's ``Retry-After`` (capped) when it asks for
        longer than the backoff, else the backoff. ``Retry-After: 0`` never means "at once"."""
        wait = self.backoff(attempt_number)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            wait = max(wait, min(float(retry_after), self.retry_after_cap))
        return wait


def is_retryable(exc: BaseException) -> bool:
    """The one retry predicate: fresh transient errors that are safe to re-send.

    An error that already went through a transport's retries (``attempts`` set, e.g. from a nested
    token request) is not retried again, so retries never multiply.
    """
    return (
        isinstance(exc, IceProdTransientError)
        and not isinstance(exc, IceProdAmbiguousError)
        and getattr(exc, "attempts", None) is None
    )


def mark_final(exc: IceProdError, attempts: int = 1) -> IceProdError:
    """Mark ``exc`` as final: its retries are spent, so no outer retry loop retries it again."""
    if getattr(exc, "attempts", None) is None:
        exc.attempts = attempts  # type: ignore[attr-defined]
        if attempts > 1 and isinstance(exc, IceProdTransientError):
            exc.message = f"{exc.message} (gave up after {attempts} attempts)"
            exc.args = (exc.message,)
    return exc


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date; ``None`` if absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def tenacity_args(settings: RetrySettings, service: str) -> dict[str, Any]:
    """The tenacity arguments of the policy, shared by ``Retrying`` and ``AsyncRetrying``."""
    import tenacity as tc

    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        return settings.wait_for(exc, state.attempt_number)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning(
            "%s request failed: %s; retry %d of %d in %.2f s",
            service,
            exc,
            state.attempt_number,
            settings.retry_limit,
            delay,
        )

    return {
        "stop": tc.stop_after_attempt(settings.attempts),
        "wait": wait,
        "retry": tc.retry_if_exception(is_retryable),
        "before_sleep": before_sleep,
        "reraise": True,
    }


def retrying(settings: RetrySettings, service: str) -> tenacity.Retrying:
    import tenacity as tc

    return tc.Retrying(**tenacity_args(settings, service))


def aretrying(settings: RetrySettings, service: str) -> tenacity.AsyncRetrying:
    import tenacity as tc

    return tc.AsyncRetrying(**tenacity_args(settings, service))
