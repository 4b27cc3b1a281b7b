"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

Since Airflow 3.2 the connection form is built from ``conn-fields`` and ``ui-field-behaviour``
declared here, without importing the hook.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_iceprod import __version__

DEFAULT_API_URL = "https://api.iceprod.icecube.aq"
DEFAULT_OAUTH_URL = "https://keycloak.icecube.wisc.edu/auth/realms/IceCube"
DEFAULT_CLIENT_ID = "iceprod-public"
DEFAULT_WEBSITE_URL = "https://iceprod.icecube.aq"


def _string_field(label: str, description: str, *, secret: bool = False) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": ["string", "null"]}
    if secret:
        schema["format"] = "password"
    return {"label": label, "description": description, "schema": schema}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-iceprod",
        "name": "IceProd",
        "description": "IceProd (IceCube Neutrino Observatory dataset and job management) for Apache Airflow.",
        "versions": [__version__],
        "connection-types": [
            {
                "connection-type": "iceprod",
                "hook-class-name": "airflow_provider_iceprod.hooks.iceprod.IceProdHook",
                "hook-name": "IceProd",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {"host": "IceProd API URL", "password": "Client secret (service accounts)"},
                    "placeholders": {
                        "host": DEFAULT_API_URL,
                        "password": "leave empty to use the refresh token from `airflow-iceprod login`",
                        "oauth_url": DEFAULT_OAUTH_URL,
                        "client_id": DEFAULT_CLIENT_ID,
                        "website_url": DEFAULT_WEBSITE_URL,
                        "actions_url": "same as the API URL",
                    },
                },
                "conn-fields": {
                    "oauth_url": _string_field(
                        "OpenID issuer URL", "Keycloak realm URL (IceProd's OAUTH_URL, rest-tools' token_url)"
                    ),
                    "client_id": _string_field("OAuth client id", "iceprod-public for people and scripts"),
                    "refresh_token": _string_field(
                        "Refresh token",
                        "Written by `airflow-iceprod login`; do not edit by hand",
                        secret=True,
                    ),
                    "actions_url": _string_field(
                        "Actions URL", "Only when /actions/* is served on another base URL than the API"
                    ),
                    "website_url": _string_field("IceProd website URL", "Used for links to dataset pages"),
                },
            }
        ],
        "extra-links": ["airflow_provider_iceprod.links.IceProdDatasetLink"],
        "triggers": [
            {
                "integration-name": "IceProd",
                "python-modules": [
                    "airflow_provider_iceprod.triggers.dataset",
                    "airflow_provider_iceprod.triggers.events",
                ],
            }
        ],
    }
