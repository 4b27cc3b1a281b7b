"""Dataset-config validation as the server does it, on top of :mod:`airflow_provider_iceprod.dataset_config`.

``PUT /config`` validates a defaults-filled copy and stores the raw body; ``POST /actions/submit`` forces
version 3.2, fills defaults, validates, and queues the filled config. Messages are IceProd's
(``Validation error in config[...]: ...``, ``config is not valid``, ``unknown validation error``).
"""

from __future__ import annotations

import json
from typing import Any

from airflow_provider_iceprod.testing.states import ApiError

_MINIMAL = {"version": 3.2, "tasks": [{"name": "t", "trays": [{"modules": [{"src": "/bin/true"}]}]}]}


def warm_up() -> None:
    """Import the validator (it pulls in Airflow, slow the first time) and build its schema once, so no
    request ever waits for that inside the server."""
    _validate(_MINIMAL, force_version=False)


def _validate(config: Any, *, force_version: bool) -> dict[str, Any]:
    from airflow_provider_iceprod.dataset_config import validate_config

    return validate_config(config, force_version=force_version)


def check_config_for_put(config: Any) -> None:
    """``PUT /config/{id}``. Without ``"version"`` IceProd applies its older v3.1 schema, which the
    stand-in approximates with the v3.2 checks."""
    from airflow_provider_iceprod.exceptions import IceProdDatasetConfigError

    try:
        _validate(config, force_version="version" not in config)
    except IceProdDatasetConfigError as exc:
        message = str(exc)
        if message.startswith("Validation error"):
            raise ApiError(400, message) from None
        raise ApiError(400, "unknown validation error") from None
    except Exception:
        raise ApiError(400, "unknown validation error") from None


def check_config_for_submit(config_text: Any) -> str:
    """``POST /actions/submit``: returns the defaults-filled config as the JSON string IceProd queues."""
    from airflow_provider_iceprod.exceptions import IceProdDatasetConfigError

    try:
        config = json.loads(config_text)
        filled = _validate(config, force_version=True)
    except IceProdDatasetConfigError as exc:
        message = str(exc)
        raise ApiError(
            400, message if message.startswith("Validation error") else "config is not valid"
        ) from None
    except Exception:
        raise ApiError(400, "config is not valid") from None
    import tornado.escape

    return tornado.escape.json_encode(filled)
