"""The submit operator's rendered arguments, turned into the input of ``check_submit``.

The rules themselves are :mod:`airflow_provider_iceprod.api.checks`; this module only reads what
Airflow rendered (a config file's text, a ``timedelta``) and merges the convenience arguments.
Nothing here touches the network or the connection.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow_provider_iceprod.api import checks
from airflow_provider_iceprod.exceptions import IceProdConfigError, IceProdDatasetConfigError


def parse_config(value: Any) -> dict[str, Any]:
    """The rendered ``config`` argument as a dict: a dict, or JSON / YAML text (a rendered file)."""
    if isinstance(value, Mapping):
        return copy.deepcopy(dict(value))
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise IceProdDatasetConfigError("The dataset config is empty.", field="config")
        try:
            parsed = json.loads(text)
        except ValueError:
            import yaml

            try:
                parsed = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise IceProdDatasetConfigError(
                    f"The dataset config is neither valid JSON nor valid YAML: {exc}", field="config"
                ) from None
        if isinstance(parsed, Mapping):
            return dict(parsed)
        raise IceProdDatasetConfigError(
            f"The dataset config must be a JSON/YAML object (or a .json/.yaml/.yml file name), got "
            f"{type(parsed).__name__}: {text[:80]!r}",
            field="config",
        )
    raise IceProdDatasetConfigError(
        f"The dataset config must be a dict, JSON/YAML text or a .json/.yaml/.yml file name, got "
        f"{type(value).__name__}.",
        field="config",
    )


def seconds(value: float | timedelta | None, field: str) -> float | None:
    """A duration > 0 in seconds (a number or a ``timedelta``); None stays None."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        if value.total_seconds() <= 0:
            raise IceProdConfigError(f"{field!r} must be > 0 seconds, got {value!r}.", field=field)
        return value.total_seconds()
    return checks.finite_number(value, field, positive=True)


def merged_extra_fields(
    extra_submit_fields: Any, *, priority: Any, start_suspended: bool, debug: bool
) -> Any:
    """``extra_submit_fields`` plus the ``priority``, ``start_suspended`` and ``debug`` arguments.

    Only merged here: :func:`~airflow_provider_iceprod.api.checks.check_submit` checks the result
    (a value that is not a dict is passed on for it to name).
    """
    if extra_submit_fields is not None and not isinstance(extra_submit_fields, Mapping):
        return extra_submit_fields
    extra = dict(extra_submit_fields or {})
    if priority is not None:
        extra["priority"] = priority
    if start_suspended:
        extra["status"] = "suspended"
    if debug:
        extra["debug"] = True
    return extra or None
