"""Test DAGs for the sensor modes, run with ``dag.test()`` by tests/integration/test_wait_modes.py.

Parameters come from the environment when the file is parsed (the test sets them):
``ICEPROD_TEST_DATASET`` (id or number), ``ICEPROD_TEST_TIMEOUT`` (s), ``ICEPROD_TEST_POKE`` (s),
``ICEPROD_TEST_SOFT_FAIL`` ("1"), ``ICEPROD_TEST_STALL_POLLS``, ``ICEPROD_TEST_RETRIES`` (task retries,
retried at once: a sensor timeout or a dataset failure must never use them).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG

from airflow_provider_iceprod.sensors.dataset import IceProdDatasetSensor

DATASET = os.environ.get("ICEPROD_TEST_DATASET", "1")
TIMEOUT = float(os.environ.get("ICEPROD_TEST_TIMEOUT", "30"))
POKE = float(os.environ.get("ICEPROD_TEST_POKE", "0.2"))
SOFT_FAIL = os.environ.get("ICEPROD_TEST_SOFT_FAIL") == "1"
STALL_POLLS = int(os.environ.get("ICEPROD_TEST_STALL_POLLS", "3"))
RETRIES = int(os.environ.get("ICEPROD_TEST_RETRIES", "0"))

MODES = {
    "iceprod_test_wait_poke": {"mode": "poke", "deferrable": False},
    "iceprod_test_wait_reschedule": {"mode": "reschedule", "deferrable": False},
    "iceprod_test_wait_deferrable": {"mode": "poke", "deferrable": True},
}

for dag_id, mode in MODES.items():
    with DAG(
        dag_id,
        schedule=None,
        start_date=datetime(2024, 1, 1, tzinfo=UTC),
        catchup=False,
        default_args={"retries": RETRIES, "retry_delay": timedelta(seconds=0)},
    ) as dag:
        IceProdDatasetSensor(
            task_id="wait",
            dataset=DATASET,
            poke_interval=POKE,
            timeout=TIMEOUT,
            soft_fail=SOFT_FAIL,
            stall_polls=STALL_POLLS,
            **mode,
        )
    globals()[dag_id] = dag
