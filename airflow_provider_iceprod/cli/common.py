"""Exit codes, the CLI's error type and its retry settings (shared by every ``airflow-iceprod`` module)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_iceprod.retry import RetrySettings

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_AUTH, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
DEFAULT_CONN_ID = "iceprod_default"
CONN_TYPE = "iceprod"
PASSWORD_ENV = "AIRFLOW_ICEPROD_AIRFLOW_PASSWORD"
AIRFLOW_TOKEN_ENV = "AIRFLOW_ICEPROD_AIRFLOW_TOKEN"
#: Connection extras the login writes; every other extra of an existing connection is kept.
URL_EXTRAS = ("oauth_url", "client_id", "actions_url", "website_url")


class CliError(Exception):
    """A failure with a message for the user and an exit code."""

    def __init__(self, message: str, code: int = EXIT_CONFIG) -> None:
        super().__init__(message)
        self.code = code


def cli_retry() -> RetrySettings:
    from airflow_provider_iceprod.retry import RetrySettings

    return RetrySettings(retry_limit=3, retry_delay=0.5, max_delay=5.0, timeout=30.0)
