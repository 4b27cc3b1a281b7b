"""IceProd operators. Importing this package is cheap: each operator loads on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_iceprod.operators.actions import IceProdDatasetActionOperator
    from airflow_provider_iceprod.operators.submit import IceProdSubmitDatasetOperator

__all__ = ["IceProdDatasetActionOperator", "IceProdSubmitDatasetOperator"]

_MODULES = {
    "IceProdSubmitDatasetOperator": "airflow_provider_iceprod.operators.submit",
    "IceProdDatasetActionOperator": "airflow_provider_iceprod.operators.actions",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
