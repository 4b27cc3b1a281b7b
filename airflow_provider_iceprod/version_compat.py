"""Airflow version gates for features that only exist on newer Airflow releases."""

from __future__ import annotations

from importlib.metadata import version

from packaging.version import Version


def _airflow_version() -> Version:
    return Version(Version(version("apache-airflow-core")).base_version)


AIRFLOW_VERSION = _airflow_version()
AIRFLOW_V_3_3_PLUS = Version("3.3.0") <= AIRFLOW_VERSION
