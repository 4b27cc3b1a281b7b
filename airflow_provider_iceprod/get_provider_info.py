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
                    # Port stays visible: Airflow 3.3's Test button posts ``Number(port)``, i.e. 0 for
                    # an empty port, and the api-server then refuses the test (400 "The host or port to
                    # test differs from the stored connection"). `airflow-iceprod login` stores it.
                    "hidden-fields": ["schema", "login"],
                    "relabeling": {
                        "host": "IceProd API URL",
                        "port": "API port",
                        "password": "Client secret (service accounts)",
                    },
                    "placeholders": {
                        "host": DEFAULT_API_URL,
                        "port": "443",
                        "password": "leave empty to use the refresh token from `airflow-iceprod login`",
                    },
                },
                "conn-fields": {
                    "oauth_url": _string_field(
                        "OpenID issuer URL",
                        f"Keycloak realm URL. Empty: {DEFAULT_OAUTH_URL}",
                    ),
                    "client_id": _string_field("OAuth client id", f"Empty: {DEFAULT_CLIENT_ID}"),
                    "actions_url": _string_field(
                        "Actions URL",
                        "Base URL of IceProd's /actions/* requests. Empty: the IceProd API URL",
                    ),
                    "website_url": _string_field(
                        "IceProd website URL",
                        f"For links to dataset pages. Empty: {DEFAULT_WEBSITE_URL}",
                    ),
                    "refresh_token": _string_field(
                        "Refresh token",
                        "Written by `airflow-iceprod login --conn-id <this id>`; a connection saved "
                        "here has none until you run it. Do not edit by hand",
                        secret=True,
                    ),
                    "refresh_token_saved_at": {
                        "label": "Logged in at (epoch seconds)",
                        "description": "Written by `airflow-iceprod login` with the refresh token; "
                        "the keep-alive check reads it. Do not edit by hand",
                        "schema": {"type": ["number", "null"]},
                    },
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
