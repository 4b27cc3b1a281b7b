"""Small helpers shared by the IceProd operators: input checks and asset events.

Nothing heavy is imported here at module level: the hook, the waiting logic and the models load
inside the functions that need them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_iceprod.exceptions import IceProdConfigError

if TYPE_CHECKING:
    from airflow.sdk import Context

_DATASET_ID = re.compile(r"^[0-9a-f]{32}$")


def parse_dataset_ref(value: Any, *, field: str = "dataset") -> str | int:
    """A dataset reference: a 32-hex dataset id, a dataset number (int or string of digits), or a
    mapping with ``dataset_id`` (or ``dataset``).

    Raises ``IceProdConfigError`` naming ``field`` for anything else (before any request is sent).
    """
    if isinstance(value, Mapping):
        value = value.get("dataset_id", value.get("dataset"))
    if isinstance(value, bool):
        pass
    elif isinstance(value, int) and value > 0:
        return value
    elif isinstance(value, str):
        text = value.strip()
        if text.isdigit() and int(text) > 0:
            return int(text)
        if _DATASET_ID.match(text.lower()):
            return text.lower()
    raise IceProdConfigError(
        f"{field!r} must be an IceProd dataset id (32 hex characters) or a dataset number (a positive "
        f"integer), got {value!r}. From an upstream submit task use "
        "\"{{ ti.xcom_pull(task_ids='submit', key='dataset_id') }}\" or the task's .output.",
        field=field,
    )


def positive_int(value: Any, *, field: str) -> int:
    """An integer > 0 (a rendered template may give a string of digits)."""
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or number <= 0:
        raise IceProdConfigError(f"{field!r} must be a positive integer, got {value!r}.", field=field)
    return number


def finite_number(value: Any, *, field: str) -> float:
    """A finite int or float (a rendered template may give a numeric string)."""
    number: float | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise IceProdConfigError(f"{field!r} must be a number, got {value!r}.", field=field)
    return number


def outlets_with_alias(outlets: Any, asset_alias: str | None) -> list[Any] | Any:
    """``outlets`` plus ``AssetAlias(asset_alias)`` when an alias is asked for."""
    if not asset_alias:
        return outlets
    from airflow.sdk import AssetAlias

    if not isinstance(asset_alias, str):
        raise IceProdConfigError(f"'asset_alias' must be a string, got {asset_alias!r}.", field="asset_alias")
    if outlets is None:
        items: list[Any] = []
    elif isinstance(outlets, (list, tuple)):
        items = list(outlets)
    else:
        items = [outlets]
    alias = AssetAlias(asset_alias)
    if alias not in items:
        items.append(alias)
    return items


def emit_asset_events(
    context: Context,
    *,
    outlets: Iterable[Any],
    asset_alias: str | None,
    api_url: str,
    extra: Mapping[str, Any],
) -> None:
    """Attach the dataset to this task's asset events.

    * ``asset_alias``: an event for ``iceprod://<api host>/datasets/<number>`` through the alias;
    * any ``iceprod://`` Asset in ``outlets`` naming this dataset gets ``extra`` on its event (Airflow
      emits events for declared outlets of a successful task by itself).
    """
    from airflow_provider_iceprod.assets import iceprod_asset, is_iceprod_asset

    outlet_events = context.get("outlet_events")
    if outlet_events is None:
        return
    asset = iceprod_asset(api_url, extra["dataset"])
    payload = dict(extra)
    if asset_alias:
        from airflow.sdk import AssetAlias

        outlet_events[AssetAlias(asset_alias)].add(asset, extra=payload)
    for outlet in outlets or ():
        if is_iceprod_asset(outlet) and outlet.uri == asset.uri:
            outlet_events[outlet].extra.update(payload)
