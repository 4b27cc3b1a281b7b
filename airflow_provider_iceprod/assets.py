"""Airflow Assets for IceProd datasets: ``iceprod://<api host>/datasets/<number>``.

An Asset lets a downstream DAG be scheduled on "this IceProd dataset is complete"::

    from airflow_provider_iceprod.assets import iceprod_asset

    SIM = iceprod_asset("https://api.iceprod.icecube.aq", 22100)

    # producer: any task that succeeds with SIM in its outlets emits an event for it
    IceProdDatasetActionOperator(task_id="retry", action="retry_failed", dataset=22100, outlets=[SIM])

    # consumer
    @dag(schedule=[SIM])
    def analyse(): ...

A submitted dataset gets its number only at run time; the operators then emit the event through an
``AssetAlias`` (``asset_alias="..."``), and a consumer schedules on that alias.

Datasets submitted outside Airflow (the website, IceProd's scripts, another group) are watched
with :func:`iceprod_dataset_asset`: an Asset with an ``AssetWatcher`` whose trigger emits an event
for each matching dataset that finishes::

    FINISHED = iceprod_dataset_asset("iceprod_default", group="simprod", description="IceCube-2026*")

    @dag(schedule=[FINISHED])
    def process(): ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Unpack
from urllib.parse import urlencode, urlsplit

from airflow_provider_iceprod.exceptions import IceProdConfigError

if TYPE_CHECKING:
    from airflow.sdk import Asset

    from airflow_provider_iceprod.triggers.events import WatchArgs

ASSET_SCHEME = "iceprod"
ASSET_GROUP = "iceprod"


def _api_host(api_url_or_host: str) -> str:
    if not isinstance(api_url_or_host, str) or not api_url_or_host.strip():
        raise IceProdConfigError(
            f"An IceProd API URL or host is required for an asset, got {api_url_or_host!r}.", field="api_url"
        )
    value = api_url_or_host.strip()
    parts = urlsplit(value if "://" in value else f"https://{value}")
    host = (parts.hostname or "").lower()
    if not host or parts.path.strip("/"):
        raise IceProdConfigError(
            f"Not an IceProd API URL or host: {api_url_or_host!r} "
            "(expected e.g. https://api.iceprod.icecube.aq).",
            field="api_url",
        )
    return f"{host}:{parts.port}" if parts.port else host


def _dataset_number(dataset_number: int | str) -> int:
    if isinstance(dataset_number, bool):
        number = 0
    elif isinstance(dataset_number, int):
        number = dataset_number
    elif isinstance(dataset_number, str) and dataset_number.strip().isdigit():
        number = int(dataset_number.strip())
    else:
        number = 0
    if number <= 0:
        raise IceProdConfigError(
            f"An IceProd dataset number is a positive integer, got {dataset_number!r}.", field="dataset"
        )
    return number


def iceprod_asset_uri(api_url_or_host: str, dataset_number: int | str) -> str:
    """``iceprod://<api host>/datasets/<number>``; the host is lower-cased, a non-default port kept."""
    return f"{ASSET_SCHEME}://{_api_host(api_url_or_host)}/datasets/{_dataset_number(dataset_number)}"


def iceprod_asset(
    api_url_or_host: str,
    dataset_number: int | str,
    *,
    name: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Asset:
    """The Airflow ``Asset`` for one IceProd dataset (name defaults to the URI, group ``iceprod``)."""
    from airflow.sdk import Asset

    uri = iceprod_asset_uri(api_url_or_host, dataset_number)
    return Asset(name=name or uri, uri=uri, group=ASSET_GROUP, extra=dict(extra or {}))


def is_iceprod_asset(obj: object) -> bool:
    """True for an ``Asset`` whose URI uses the ``iceprod`` scheme."""
    uri = getattr(obj, "uri", None)
    return isinstance(uri, str) and uri.startswith(f"{ASSET_SCHEME}://") and type(obj).__name__ == "Asset"


def asset_event_extra(dataset_id: str, dataset: int, url: str, status: str, **more: Any) -> dict[str, Any]:
    """The ``extra`` of an asset event for a dataset: plain JSON values only."""
    extra: dict[str, Any] = {"dataset_id": dataset_id, "dataset": dataset, "url": url, "status": status}
    extra.update(more)
    return extra


def iceprod_dataset_asset(
    iceprod_conn_id: str = "iceprod_default",
    *,
    name: str | None = None,
    extra: Mapping[str, Any] | None = None,
    **watch: Unpack[WatchArgs],
) -> Asset:
    """An ``Asset`` that gets an event whenever a matching IceProd dataset enters ``status``.

    The asset carries an ``AssetWatcher`` running
    :class:`~airflow_provider_iceprod.triggers.events.IceProdDatasetEventTrigger` in the
    triggerer; schedule a DAG on it. ``watch`` are that trigger's arguments (``status``
    (default ``complete``), ``group``, ``owner``, ``description``, ``datasets``,
    ``poll_interval`` (default 60 s), ``replay_since``; see ``WatchArgs`` there). Its URI is
    ``iceprod://<conn id>/watch?<filter>``, which is also the default name. Bad arguments raise
    ``ValueError`` when the DAG file is parsed.
    """
    from airflow.sdk import Asset, AssetWatcher

    from airflow_provider_iceprod.triggers.events import IceProdDatasetEventTrigger

    trigger = IceProdDatasetEventTrigger(iceprod_conn_id, **watch)
    query = {
        k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in trigger.filter.to_dict().items()
    }
    uri = f"{ASSET_SCHEME}://{iceprod_conn_id}/watch?" + urlencode(
        {k: v for k, v in query.items() if v is not None}, safe="*,?[]"
    )
    watcher = AssetWatcher(
        name=f"iceprod_watch_{trigger.filter.fingerprint(iceprod_conn_id)}", trigger=trigger
    )
    return Asset(name=name or uri, uri=uri, group=ASSET_GROUP, extra=dict(extra or {}), watchers=[watcher])
