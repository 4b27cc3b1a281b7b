"""The sensor in each mode (poke, reschedule, deferrable) under ``dag.test()`` against the stand-in.

``dag.test()`` runs the real task runner in-process: templating, XCom, reschedules (with the task
state store) and, for deferrable, the trigger's ``run()`` followed by ``execute_complete``.
"""

from __future__ import annotations

import time

import pytest
from wait_helpers import TWO_TASKS, wait_until

MODES = ["iceprod_test_wait_poke", "iceprod_test_wait_reschedule", "iceprod_test_wait_deferrable"]


def _ti(dag_run):
    (ti,) = dag_run.get_task_instances()
    return ti


@pytest.mark.parametrize("dag_id", MODES)
def test_waits_until_complete(wait_dags, ip, dag_id):
    ip.grid.task_duration = 0.3
    dataset_id = ip.create_dataset(TWO_TASKS, jobs_submitted=2)
    dags = wait_dags(dataset=dataset_id, poke=0.2, timeout=60)
    dag_run = getattr(dags, dag_id).test()
    ti = _ti(dag_run)
    assert ti.state == "success", ti.state
    assert ip.dataset(dataset_id)["status"] == "complete"
    event = ti.xcom_pull(task_ids="wait")
    assert event["status"] == "success"
    assert event["dataset_id"] == dataset_id
    assert event["progress"]["job_counts"] == {"complete": 2}
    assert event["progress"]["task_counts"] == {"complete": 4}


@pytest.mark.parametrize(
    ("dag_id", "soft_fail"),
    [
        ("iceprod_test_wait_poke", False),
        ("iceprod_test_wait_reschedule", True),
        ("iceprod_test_wait_deferrable", False),
        ("iceprod_test_wait_deferrable", True),
    ],
)
def test_timeout_in_every_mode_is_final(wait_dags, ip, slow, dag_id, soft_fail):
    dataset_id = slow()
    dags = wait_dags(dataset=dataset_id, poke=0.2, timeout=1.0, soft_fail=int(soft_fail), retries=2)
    started = time.monotonic()
    ti = _ti(getattr(dags, dag_id).test())
    assert time.monotonic() - started < 30
    # AirflowSensorTimeout is never retried (retries=2 would re-run the task at once otherwise)
    assert ti.try_number == 1
    assert ti.state == ("skipped" if soft_fail else "failed")
    assert ip.dataset(dataset_id)["status"] == "processing"


# Reschedule mode and its stall counter: tests/integration/test_wait_reschedule_state.py (a fresh
# operator object per poke, as in production).


def test_dataset_by_number_and_templated(wait_dags, ip):
    ip.grid.task_duration = 0.05
    dataset_id = ip.create_dataset(TWO_TASKS, jobs_submitted=1)
    number = ip.dataset(dataset_id)["dataset"]
    dags = wait_dags(dataset="{{ " + str(number) + " }}", poke=0.2, timeout=60)
    ti = _ti(dags.iceprod_test_wait_deferrable.test())
    assert ti.state == "success"
    assert ti.xcom_pull(task_ids="wait")["dataset_id"] == dataset_id


@pytest.mark.parametrize("dag_id", ["iceprod_test_wait_poke", "iceprod_test_wait_deferrable"])
def test_stalled_dataset_shows_the_failed_tasks_stderr_in_the_task_log(wait_dags, ip, stalled, dag_id, capfd):
    dataset_id = stalled()
    wait_until(lambda: any(t["status"] == "failed" for t in ip.tasks(dataset_id)))
    (task,) = [t for t in ip.tasks(dataset_id) if t["status"] == "failed"]
    ip.store.add_log(dataset_id, task["task_id"], "stderr", "ImportError: No module named 'icecube'\n")
    dags = wait_dags(dataset=dataset_id, poke=0.2, timeout=60, stall_polls=2)
    ti = _ti(getattr(dags, dag_id).test())
    assert ti.state == "failed"
    out = capfd.readouterr()
    log = out.out + out.err
    assert f"IceProd logs of failed task generate (job 0, task {task['task_id']}):" in log
    assert "ImportError: No module named 'icecube'" in log
