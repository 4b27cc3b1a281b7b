"""A trigger that lists datasets with ``await hook.get_conn().request(...)`` (imported by classpath)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_iceprod.hooks.iceprod import IceProdHook


class ListDatasetsTrigger(BaseTrigger):
    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("rest_client_triggers.ListDatasetsTrigger", {})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        client = await IceProdHook().aget_conn()
        datasets = await client.request("GET", "/datasets", {"keys": "dataset_id"})
        yield TriggerEvent({"ids": sorted(datasets)})
