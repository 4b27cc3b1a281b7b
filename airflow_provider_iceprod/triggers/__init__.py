"""IceProd triggers. Imported lazily so that ``import airflow_provider_iceprod.triggers`` stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_iceprod.triggers.dataset import IceProdDatasetTrigger
    from airflow_provider_iceprod.triggers.events import IceProdDatasetEventTrigger

__all__ = ["IceProdDatasetEventTrigger", "IceProdDatasetTrigger"]


def __getattr__(name: str) -> Any:
    if name == "IceProdDatasetTrigger":
        from airflow_provider_iceprod.triggers.dataset import IceProdDatasetTrigger

        return IceProdDatasetTrigger
    if name == "IceProdDatasetEventTrigger":
        from airflow_provider_iceprod.triggers.events import IceProdDatasetEventTrigger

        return IceProdDatasetEventTrigger
    raise AttributeError(name)
