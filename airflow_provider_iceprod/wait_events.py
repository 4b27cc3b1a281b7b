"""The result of a wait as a plain-valued event (trigger event or sync wait result), and reading it back.

:func:`event_result` checks an event handed to ``execute_complete`` and raises the matching
exception; :func:`not_visible_error` is the failure for a dataset the token cannot read.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_iceprod.exceptions import (
    IceProdDatasetFailedError,
    IceProdError,
    IceProdPermissionError,
)

if TYPE_CHECKING:
    from airflow_provider_iceprod.models import DatasetProgress
    from airflow_provider_iceprod.waiting import Verdict

EVENT_STATUSES = ("success", "failed", "timeout", "error")


# ---------------------------------------------------------------------------------------------- events


def make_event(
    status: str,
    dataset_id: str,
    *,
    outcome: str,
    message: str,
    progress: DatasetProgress | None = None,
    error_type: str | None = None,
) -> dict[str, Any]:
    """A trigger event / wait result: plain values only."""
    event: dict[str, Any] = {
        "status": status,
        "dataset_id": dataset_id,
        "outcome": outcome,
        "message": message,
        "progress": progress.as_dict() if progress is not None else None,
    }
    if error_type:
        event["error_type"] = error_type
    return event


def verdict_event(verdict: Verdict, progress: DatasetProgress) -> dict[str, Any]:
    return make_event(
        verdict.status,
        progress.dataset_id,
        outcome=verdict.outcome,
        message=verdict.message,
        progress=progress,
    )


def error_event(dataset_id: str, exc: BaseException) -> dict[str, Any]:
    """An event for an exception; keeps IceProd's text, names the exception type."""
    return make_event(
        "error",
        dataset_id,
        outcome="error",
        message=f"{type(exc).__name__}: {exc}",
        error_type=type(exc).__name__,
    )


def timeout_event(
    dataset_id: str, deadline: float, progress: DatasetProgress | None = None
) -> dict[str, Any]:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(deadline))
    return make_event(
        "timeout",
        dataset_id,
        outcome="timeout",
        message=f"Timed out waiting for IceProd dataset {dataset_id}: the deadline {when} passed.",
        progress=progress,
    )


def _error_class(name: object) -> type[IceProdError]:
    from airflow_provider_iceprod import exceptions

    cls = getattr(exceptions, str(name), None) if isinstance(name, str) else None
    if isinstance(cls, type) and issubclass(cls, IceProdError):
        return cls
    return IceProdError


def event_result(event: object) -> dict[str, Any]:
    """Check a trigger event handed to ``execute_complete``; return it when it is a success.

    Raises ``IceProdDatasetFailedError`` for failures, ``AirflowSensorTimeout`` for timeouts, the
    original IceProd exception type for error events, and ``AirflowException`` for ``None`` or
    anything that is not a well-formed event.
    """
    from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout

    if not isinstance(event, Mapping):
        raise AirflowException(f"IceProd wait resumed without a valid trigger event (got {event!r}).")
    status = event.get("status")
    dataset_id = event.get("dataset_id")
    message = event.get("message")
    if status not in EVENT_STATUSES or not isinstance(dataset_id, str) or not dataset_id:
        raise AirflowException(f"IceProd wait resumed with an unrecognised trigger event: {dict(event)!r}")
    if not isinstance(message, str):
        message = f"IceProd dataset {dataset_id}: {status}"
    if status == "success":
        progress = event.get("progress")
        if progress is not None and not isinstance(progress, Mapping):
            raise AirflowException(f"IceProd trigger event has a malformed 'progress': {progress!r}")
        return dict(event)
    if status == "timeout":
        raise AirflowSensorTimeout(message)
    if status == "failed":
        raise IceProdDatasetFailedError(message, dataset_id=dataset_id)
    raise _error_class(event.get("error_type"))(message)


# -------------------------------------------------------------------------------------------- failures


def not_visible_error(
    ref: object, exc: IceProdError, conn_id: str | None = None
) -> IceProdDatasetFailedError:
    """A clear, non-retryable failure for a dataset the token cannot read (403) or that is gone (404)."""
    via = f" with connection {conn_id!r}" if conn_id else ""
    hint = (
        "IceProd answers 403 both when the token may not read a dataset and when no such dataset exists; "
        "check the dataset id/number and that the connection's user may read it."
        if isinstance(exc, IceProdPermissionError)
        else "Check the dataset id or number."
    )
    return IceProdDatasetFailedError(
        f"IceProd dataset {ref} cannot be read{via}: {exc}. {hint}",
        dataset_id=str(ref),
        status_code=exc.status_code,
        iceprod_message=exc.iceprod_message,
    )
