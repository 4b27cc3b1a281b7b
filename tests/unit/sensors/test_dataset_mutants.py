"""Sensor behaviours that once survived a one-line mutation of the provider (issue 18).

Airflow before 3.3 has no task state store, so a rescheduled sensor forgets its stall counter
between pokes; it confirms a suspected stall inside the poke instead. Here each poke runs on a
fresh sensor object with no ``task_state_store`` in its context, as such a worker would.
"""

from __future__ import annotations

import pytest
from wait_helpers import wait_until

from airflow_provider_iceprod.exceptions import IceProdDatasetFailedError
from airflow_provider_iceprod.sensors.dataset import IceProdDatasetSensor


def _sensor(dataset_id: str, mode: str) -> IceProdDatasetSensor:
    return IceProdDatasetSensor(
        task_id="wait", dataset=dataset_id, mode=mode, poke_interval=0.1, timeout=60, stall_polls=3
    )


def _stalled_now(ip, stalled) -> str:
    dataset_id = stalled()
    wait_until(lambda: ip.task_counts(dataset_id).get("failed", 0) > 0)
    return dataset_id


def test_reschedule_without_a_state_store_confirms_a_stall_within_one_poke(ip, stalled) -> None:
    dataset_id = _stalled_now(ip, stalled)
    ip.reset_counters()
    with pytest.raises(IceProdDatasetFailedError, match="stalled") as info:
        _sensor(dataset_id, "reschedule").poke({})  # a fresh object: nothing remembered
    assert "for 3 consecutive polls" in str(info.value)
    assert "Failed tasks: generate (1)." in str(info.value)
    assert ip.counters.get("GET /datasets/{dataset_id}/task_counts/status") == 3


def test_poke_mode_does_not_confirm_inside_a_poke(ip, stalled) -> None:
    """Poke mode keeps its counter in the object between pokes: one poll per poke."""
    dataset_id = _stalled_now(ip, stalled)
    ip.reset_counters()
    sensor = _sensor(dataset_id, "poke")
    assert sensor.poke({}) is False
    assert sensor.poke({}) is False
    assert ip.counters.get("GET /datasets/{dataset_id}/task_counts/status") == 2
    with pytest.raises(IceProdDatasetFailedError, match="stalled"):
        sensor.poke({})
