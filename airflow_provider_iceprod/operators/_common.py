"""Small helpers shared by the IceProd operators: the asset alias and asset events.

Input checks live in :mod:`airflow_provider_iceprod.api.checks` (written once for the whole package).

Nothing heavy is imported here at module level: the hook, the waiting logic and the models load
inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_iceprod.exceptions import IceProdConfigError

if TYPE_CHECKING:
    from airflow.sdk import Context


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
