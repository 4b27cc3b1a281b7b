"""IceProd sensors. Imported lazily so that ``import airflow_provider_iceprod.sensors`` stays cheap."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_iceprod.sensors.dataset import IceProdDatasetSensor

__all__ = ["IceProdDatasetSensor"]


def __getattr__(name: str) -> Any:
    if name == "IceProdDatasetSensor":
        from airflow_provider_iceprod.sensors.dataset import IceProdDatasetSensor

        return IceProdDatasetSensor
    raise AttributeError(name)
