"""The keep-alive check behind the ``iceprod_token_keepalive`` example DAG.

Keycloak ends an offline session after 30 idle days. Refreshing once a day keeps it alive, and a
single scheduled writer (``max_active_runs=1``) is also the safest place to persist rotated refresh
tokens. The check fails loudly, naming the login command, when the token is dead, when a rotated
refresh token could not be saved, or when the login is older than a configured age.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from airflow_provider_iceprod.auth.provider import TokenProvider
from airflow_provider_iceprod.auth.tokens import login_command
from airflow_provider_iceprod.exceptions import IceProdAuthError

log = logging.getLogger(__name__)

DAY = 86400.0


def keep_alive(provider: TokenProvider, *, max_login_age_days: float = 0.0) -> dict[str, Any]:
    """Force one refresh and check the login's age. Returns a secret-free summary (safe for XCom).

    ``max_login_age_days`` <= 0 disables the age check. Raises :class:`IceProdAuthError` (a task
    failure that is not retried) when the credentials are dead or too old.
    """
    conn_id = provider.settings.conn_id
    provider.get_token(force_refresh=True)  # dead, revoked or idled-out credentials raise here
    status = provider.status()
    if status.unsaved_rotation:
        raise IceProdAuthError(
            f"IceProd connection {conn_id!r}: the issuer rotated the refresh token, but the new one could "
            "not be saved (see the warnings above); it is lost when this task ends. Check that the task "
            "can write Airflow Variables, then run `airflow-iceprod refresh --conn-id "
            f"{conn_id}` (or `{login_command(conn_id)}` if that fails)."
        )
    now = time.time()
    login_age_days = (now - status.login_at) / DAY if status.login_at else None
    summary: dict[str, Any] = {
        "conn_id": conn_id,
        "credential": status.credential,
        "username": status.username,
        "groups": list(status.groups),
        "access_token_expires_at": status.access_expires_at,
        "refresh_token_source": status.refresh_source,
        "login_age_days": None if login_age_days is None else round(login_age_days, 2),
    }
    log.info(
        "IceProd connection %r: refreshed for %s; login age %s days",
        conn_id,
        status.username or "an unnamed user",
        summary["login_age_days"],
    )
    if status.credential != "refresh_token" or max_login_age_days <= 0:
        return summary
    if login_age_days is None:
        log.warning(
            "IceProd connection %r has no refresh_token_saved_at extra, so its login age is unknown. "
            "Run `%s` to record it.",
            conn_id,
            login_command(conn_id),
        )
        return summary
    if login_age_days > max_login_age_days:
        raise IceProdAuthError(
            f"IceProd connection {conn_id!r}: the login is {login_age_days:.1f} days old, older than the "
            f"configured maximum of {max_login_age_days:g} days. The token still works today, but log in "
            f"again before the identity provider ends the session: run `{login_command(conn_id)}`."
        )
    return summary
