"""IceProd triggers. Imported lazily so that ``import airflow_provider_iceprod.triggers`` stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_iceprod.triggers.dataset import IceProdDatasetTrigger

__all__ = ["IceProdDatasetTrigger"]


def __getattr__(name: str) -> Any:
    if name == "IceProdDatasetTrigger":
        from airflow_provider_iceprod.triggers.dataset import IceProdDatasetTrigger

        return IceProdDatasetTrigger
    raise AttributeError(name)
