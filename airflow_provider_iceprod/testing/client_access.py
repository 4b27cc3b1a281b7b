"""How clients reach ``LocalIceProd``: its addresses, tokens for tests, and Airflow connections to it.

A base of :class:`~airflow_provider_iceprod.testing.server.LocalIceProd`; the server sets
``base_url`` and ``idp`` when it starts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_iceprod.testing.idp import IdentityProvider

REALM_PATH = "/auth/realms/IceCube"
INFO_FIELDS = (  # what ``info()`` shows, in this order: the properties below of the same names
    "api_url",
    "actions_url",
    "issuer_url",
    "website_url",
    "public_client_id",
    "service_client_id",
    "service_client_secret",
)


class ClientAccess:
    """Addresses, client ids, tokens and Airflow connection fields of a running stand-in."""

    base_url: str
    idp: IdentityProvider
    _actions_path: str
    _users: Mapping[str, Any]

    # ---------------------------------------------------------------- addresses and clients

    @property
    def usernames(self) -> list[str]:
        """The identity provider's users."""
        return sorted(self._users)

    @property
    def api_url(self) -> str:
        return self.base_url

    @property
    def actions_url(self) -> str:
        return self.base_url + self._actions_path

    @property
    def issuer_url(self) -> str:
        return self.base_url + REALM_PATH

    @property
    def website_url(self) -> str:
        """A placeholder for IceProd's website: ``{website_url}/dataset/<dataset_id>`` shows a dataset."""
        return self.base_url + "/website"

    @property
    def public_client_id(self) -> str:
        return self.idp.public_client_id

    @property
    def service_client_id(self) -> str:
        return self.idp.service_client_id

    @property
    def service_client_secret(self) -> str:
        return self.idp.service_client_secret

    def info(self) -> dict[str, str]:
        """What ``airflow-iceprod local-server`` prints."""
        return {name: getattr(self, name) for name in INFO_FIELDS}

    # ---------------------------------------------------------------- tokens

    def issue_refresh_token(self, username: str = "alice") -> str:
        """An offline refresh token for ``username`` of the public client (skips the device flow)."""
        return self.idp.issue_refresh_token(username)

    def access_token(self, username: str = "alice") -> str:
        """An access token for ``username``, for plain HTTP requests in tests."""
        return self.idp.access_token_for(username)

    def service_access_token(self) -> str:
        """An access token of the confidential service client (client-credentials grant, not counted)."""
        return str(
            self.idp.token(
                {"grant_type": "client_credentials"}, (self.service_client_id, self.service_client_secret)
            )["access_token"]
        )

    def issued_tokens(self) -> list[str]:
        """Every access and refresh token the identity provider signed (for leak checks in logs)."""
        return self.idp.issued_tokens()

    def revoke_refresh_token(self, token: str) -> bool:
        """End the session of a refresh token (every refresh token of that login stops working)."""
        return self.idp.revoke_refresh_token(token)

    def revoke_all(self, username: str | None = None) -> int:
        """End every session (of ``username``). Returns how many."""
        return self.idp.revoke_all(username)

    def refresh_token_is_valid(self, token: str) -> bool:
        return self.idp.refresh_token_is_valid(token)

    def expire_access_tokens(self) -> int:
        """Make all access tokens issued so far fail with ``403 authentication failed`` (as if expired)."""
        return self.idp.expire_access_tokens()

    # ---------------------------------------------------------------- Airflow connection

    def connection_extra(self, refresh_token: str | None = None) -> dict[str, Any]:
        """Extras for an Airflow ``iceprod`` connection pointing at this server."""
        extra: dict[str, Any] = {
            "oauth_url": self.issuer_url,
            "client_id": self.public_client_id,
            "website_url": self.website_url,
        }
        if self.actions_url != self.api_url:
            extra["actions_url"] = self.actions_url
        if refresh_token:
            extra["refresh_token"] = refresh_token
            extra["refresh_token_saved_at"] = time.time()
        return extra

    def _connection_fields(self, username: str | None, service: bool) -> dict[str, Any]:
        if service:
            extra = self.connection_extra()
            extra["client_id"] = self.service_client_id
            return {
                "conn_type": "iceprod",
                "host": self.api_url,
                "password": self.service_client_secret,
                "extra": extra,
            }
        return {
            "conn_type": "iceprod",
            "host": self.api_url,
            "extra": self.connection_extra(self.issue_refresh_token(username or "alice")),
        }

    def airflow_connection_json(
        self, conn_id: str = "iceprod_default", username: str = "alice", *, service: bool = False
    ) -> str:
        """JSON for ``AIRFLOW_CONN_<CONN_ID>``: a fresh refresh token for ``username``, or with
        ``service=True`` the confidential client's id and secret (client-credentials grant)."""
        del conn_id  # the env var's name carries it
        return json.dumps(self._connection_fields(username, service))

    def airflow_connection_uri(
        self, conn_id: str = "iceprod_default", username: str = "alice", *, service: bool = False
    ) -> str:
        """The same connection as an Airflow URI (built by Airflow's own ``Connection.get_uri``)."""
        from airflow.models.connection import Connection

        fields = self._connection_fields(username, service)
        conn = Connection(
            conn_id=conn_id,
            conn_type=fields["conn_type"],
            host=fields["host"],
            password=fields.get("password"),
            extra=json.dumps(fields["extra"]),
        )
        return conn.get_uri()
