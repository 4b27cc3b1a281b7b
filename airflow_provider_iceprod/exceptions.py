"""The provider's exception hierarchy.

Every error keeps IceProd's own message (``iceprod_message``) so that what the server said reaches
the task log unchanged. Nothing here ever carries a token: callers pass paths, never full request
headers or bodies.

Errors that retrying a task cannot fix (bad input, dead credentials) also derive from Airflow's
``AirflowFailException`` so that Airflow fails the task at once instead of burning its retries.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowFailException


class IceProdError(Exception):
    """Base class: something went wrong talking to IceProd or its identity provider.

    ``status_code`` is the HTTP status IceProd answered with (None when no answer came). It is typed
    ``Any`` because Airflow's own exceptions use the same attribute name for an ``HTTPStatus``.
    """

    status_code: Any

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        iceprod_message: str | None = None,
        method: str | None = None,
        path: str | None = None,
        body: object = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.body = body  # the parsed JSON error body (never contains a token)
        self.status_code = status_code
        self.iceprod_message = iceprod_message
        self.method = method
        self.path = path

    def __str__(self) -> str:
        return self.message


class IceProdTransientError(IceProdError):
    """Timeouts, connection errors, 5xx, 429 and 503: worth retrying later.

    ``retry_after`` holds the server's ``Retry-After`` in seconds when it sent one.
    """

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class IceProdAmbiguousError(IceProdTransientError):
    """A non-idempotent request failed after the server may have acted on it.

    It is never re-sent blindly: callers reconcile (look the dataset up) before trying again.
    """


class IceProdRequestError(IceProdError):
    """A 4xx answer that retrying will not change."""


class IceProdValidationError(IceProdRequestError, AirflowFailException):
    """400: IceProd rejected the request body or parameters (its message says why)."""


class IceProdPermissionError(IceProdRequestError):
    """403: the token may not do this.

    For non-admin tokens IceProd also answers 403 (``attr not found``) for a dataset that does not
    exist, so a typo in a dataset id looks like this too.
    """


class IceProdNotFoundError(IceProdRequestError):
    """404: no such dataset, job, task, log or action request."""


class IceProdAuthError(IceProdError, AirflowFailException):
    """Credentials are missing, expired or revoked. Not retryable: a person must log in again.

    The message names the command to run (``airflow-iceprod login --conn-id ...``).
    """


class IceProdConfigError(IceProdError, AirflowFailException):
    """The connection or an operator argument is wrong before any request was sent.

    ``field`` names the offending connection field, argument or config path.
    """

    def __init__(self, message: str, *, field: str | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.field = field


class IceProdDatasetConfigError(IceProdConfigError):
    """A dataset config failed the client-side v3.2 check.

    ``str()`` uses IceProd's own wording, e.g.
    ``Validation error in config['tasks'][0]['trays']: [] should be non-empty``.
    """


class IceProdActionTimeoutError(IceProdTransientError):
    """An ``/actions/*`` request did not finish in time; it may still run. ``request_id`` names it."""

    def __init__(self, message: str, *, request_id: str | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.request_id = request_id


class IceProdActionError(IceProdError):
    """An ``/actions/*`` request ended in status ``error``; ``iceprod_message`` is its error_message."""

    def __init__(self, message: str, *, request_id: str | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.request_id = request_id


class IceProdDatasetFailedError(IceProdError, AirflowFailException):
    """A dataset being waited on ended badly: ``errors``, a stall, or ``suspended`` when that fails."""

    def __init__(self, message: str, *, dataset_id: str | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.dataset_id = dataset_id
