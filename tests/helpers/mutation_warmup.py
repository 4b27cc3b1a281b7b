"""Imports for ``make mutation``'s fork server (not a test module; no tests here).

mutmut forks one process per mutant from a server that has collected the selected tests. Most tests
import Airflow inside the test or fixture, so without this every mutant's process would import it
again (about 4 s of CPU each). ``scripts/mutation.py`` adds this file last to each module's test
selection: collecting it, after ``tests/conftest.py`` has pointed Airflow at the test home, imports
those modules once in the server. Nothing runs: no DB, no threads (a forked copy of a thread pool
hangs).
"""

from __future__ import annotations

import contextlib
import importlib

MODULES = [
    "airflow.models",
    "airflow.models.taskinstance",
    "airflow.models.xcom",
    "airflow.models.asset",
    "airflow.utils.session",
    "airflow.sdk",
    "airflow.sdk.exceptions",
    "airflow.sdk.log",
    "airflow.sdk.execution_time.comms",
    "airflow.sdk.execution_time.task_runner",
    "airflow.sdk.execution_time.supervisor",
    "airflow.api_fastapi.execution_api.app",
    "airflow.serialization.serialized_objects",
    "airflow.dag_processing.dagbag",
    "airflow.dag_processing.collection",
    "airflow.dag_processing.bundles.manager",
    "airflow.triggers.base",
    "airflow_provider_iceprod.hooks.iceprod",
    "airflow_provider_iceprod.auth.provider",
    "airflow_provider_iceprod.operators.submit",
    "airflow_provider_iceprod.testing",
]

for name in MODULES:
    with contextlib.suppress(ImportError):  # a module another Airflow version does not have
        importlib.import_module(name)
