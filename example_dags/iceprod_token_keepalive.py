"""Keep the IceProd login of a connection alive, and shout when it needs a person.

Runs daily. Its one task forces a token refresh for the connection, so the identity provider's
offline session never idles out (Keycloak ends it after 30 idle days) and a rotated refresh token is
saved by a single writer (``max_active_runs=1``). It fails, without retries and naming
``airflow-iceprod login``, when the token is dead or the login is older than ``max_login_age_days``.

Nothing here does I/O when the file is parsed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from airflow.sdk import Param, dag, task


@dag(
    dag_id="iceprod_token_keepalive",
    schedule="@daily",
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 0},
    params={
        "conn_id": Param(
            "iceprod_default", type="string", description="the IceProd connection to keep alive"
        ),
        "max_login_age_days": Param(
            180,
            type="number",
            minimum=0,
            description="fail when the last `airflow-iceprod login` is older than this (0: never)",
        ),
    },
    tags=["iceprod", "maintenance"],
    doc_md=__doc__,
)
def iceprod_token_keepalive() -> None:
    @task(retries=0)
    def refresh_iceprod_token(params: dict | None = None) -> dict:
        from airflow_provider_iceprod.auth.keepalive import keep_alive
        from airflow_provider_iceprod.auth.provider import TokenProvider
        from airflow_provider_iceprod.hooks.iceprod import IceProdHook

        params = params or {}
        hook = IceProdHook(iceprod_conn_id=params.get("conn_id", "iceprod_default"))
        provider = TokenProvider(hook.settings, retry=hook.retry_settings)
        return keep_alive(provider, max_login_age_days=float(params.get("max_login_age_days", 180)))

    refresh_iceprod_token()


iceprod_token_keepalive()
