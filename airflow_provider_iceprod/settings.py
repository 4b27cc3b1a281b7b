"""The parsed ``iceprod`` Airflow connection. Parsing does no I/O."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_iceprod.exceptions import IceProdConfigError
from airflow_provider_iceprod.get_provider_info import (
    DEFAULT_API_URL,
    DEFAULT_CLIENT_ID,
    DEFAULT_OAUTH_URL,
    DEFAULT_WEBSITE_URL,
)


def _normalise_url(value: str, field: str) -> str:
    value = value.strip()
    if "://" not in value:
        value = "https://" + value
    value = value.rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise IceProdConfigError(
            f"IceProd connection field {field!r} is not a URL: {value!r}. "
            "Use a full URL such as https://api.iceprod.icecube.aq.",
            field=field,
        )
    return value


def _check_extra_is_json(conn: Any) -> None:
    """Airflow reads an extra that is not JSON as ``{}`` (with a log line): say so, before anything
    reports "no credentials" for a connection whose refresh token is in there."""
    raw = getattr(conn, "extra", None)
    if not isinstance(raw, str) or not raw.strip():
        return
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        problem = f"it is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    else:
        if isinstance(parsed, dict):
            return
        problem = f"it is JSON but not an object (got {type(parsed).__name__})"
    raise IceProdConfigError(
        f"IceProd connection {conn.conn_id!r}: the extra field cannot be read: {problem}. It must be a "
        'JSON object such as {"oauth_url": "...", "refresh_token": "..."}; fix it in the connection, or '
        f"run `airflow-iceprod login --conn-id {conn.conn_id}` to rewrite it.",
        field="extra",
    )


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything the hook needs from the connection, validated.

    ``refresh_token`` and ``client_secret`` are secrets: the dataclass ``repr`` hides them.
    """

    conn_id: str
    api_url: str
    actions_url: str
    oauth_url: str
    client_id: str
    website_url: str
    refresh_token: str | None = None
    refresh_token_saved_at: float | None = None
    client_secret: str | None = None

    def __repr__(self) -> str:
        return (
            f"ConnectionSettings(conn_id={self.conn_id!r}, api_url={self.api_url!r}, "
            f"actions_url={self.actions_url!r}, oauth_url={self.oauth_url!r}, client_id={self.client_id!r}, "
            f"credential={self.credential_kind!r})"
        )

    @property
    def credential_kind(self) -> str:
        """``client_credentials``, ``refresh_token`` or ``none``."""
        if self.client_secret:
            return "client_credentials"
        if self.refresh_token:
            return "refresh_token"
        return "none"

    @classmethod
    def from_fields(
        cls,
        conn_id: str,
        host: str | None,
        password: str | None,
        extra: Mapping[str, Any] | None,
    ) -> ConnectionSettings:
        extra = dict(extra or {})
        api_url = _normalise_url(host or DEFAULT_API_URL, "host")
        saved_at = extra.get("refresh_token_saved_at")
        try:
            saved_at_value = float(saved_at) if saved_at not in (None, "") else None
        except (TypeError, ValueError):
            raise IceProdConfigError(
                f"IceProd connection {conn_id!r}: extra 'refresh_token_saved_at' must be epoch seconds, "
                f"got {saved_at!r}. Run `airflow-iceprod login --conn-id {conn_id}` to rewrite it.",
                field="refresh_token_saved_at",
            ) from None
        return cls(
            conn_id=conn_id,
            api_url=api_url,
            actions_url=_normalise_url(extra.get("actions_url") or api_url, "actions_url"),
            oauth_url=_normalise_url(extra.get("oauth_url") or DEFAULT_OAUTH_URL, "oauth_url"),
            client_id=str(extra.get("client_id") or DEFAULT_CLIENT_ID),
            website_url=_normalise_url(extra.get("website_url") or DEFAULT_WEBSITE_URL, "website_url"),
            refresh_token=(str(extra["refresh_token"]).strip() or None)
            if extra.get("refresh_token")
            else None,
            refresh_token_saved_at=saved_at_value,
            client_secret=password or None,
        )

    @classmethod
    def from_connection(cls, conn: Any, extra: Mapping[str, Any] | None = None) -> ConnectionSettings:
        """Build from an Airflow ``Connection``. Pass ``extra`` when it was read asynchronously."""
        _check_extra_is_json(conn)
        if extra is None:
            extra = conn.extra_dejson
        return cls.from_fields(conn.conn_id, conn.host, conn.password, extra)

    def dataset_url(self, dataset_id: str) -> str:
        """The dataset's page on the IceProd website (links use the 32-hex id, not the number)."""
        return f"{self.website_url}/dataset/{dataset_id}"
