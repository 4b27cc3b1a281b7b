"""``IceProdDatasetSensor`` called directly (poke mode and the deferrable hand-off) against the stand-in.

The modes under the real task runner are in ``test_sensor_dag_test.py``; here each outcome is
checked with its exact exception, which ``dag.test()`` only shows as a task state.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout, AirflowSkipException, TaskDeferred
from wait_helpers import NOT_A_DATASET, ONE_TASK, TWO_TASKS, hook, wait_for_status

from airflow_provider_iceprod.exceptions import (
    IceProdConfigError,
    IceProdDatasetFailedError,
    IceProdTransientError,
)
from airflow_provider_iceprod.sensors.dataset import IceProdDatasetSensor
from airflow_provider_iceprod.triggers.dataset import IceProdDatasetTrigger
from airflow_provider_iceprod.wait_loop import wait_for_dataset
from airflow_provider_iceprod.waiting import WaitOptions, make_event


def sensor(dataset, **kwargs) -> IceProdDatasetSensor:
    kwargs.setdefault("poke_interval", 0.1)
    kwargs.setdefault("timeout", 30)
    kwargs.setdefault("deferrable", False)
    return IceProdDatasetSensor(
        task_id="wait", dataset=dataset, hook_params={"retry_limit": 1, "retry_delay": 0.01}, **kwargs
    )


def test_complete_by_id_number_and_xcom(ip):
    ip.grid.task_duration = 0.1
    dataset_id = ip.create_dataset(TWO_TASKS, jobs_submitted=2)
    number = ip.dataset(dataset_id)["dataset"]
    for ref in (dataset_id, number, str(number), {"dataset_id": dataset_id, "url": "x"}):
        result = sensor(ref).execute({})
        assert result["status"] == "success"
        assert result["dataset_id"] == dataset_id
        assert result["progress"]["task_counts"] == {"complete": 4}


def test_errors_fail_fast_with_a_link(ip):
    ip.grid.fail_task("generate")
    dataset_id = ip.create_dataset(ONE_TASK)
    with pytest.raises(IceProdDatasetFailedError, match="'errors'") as info:
        sensor(dataset_id, timeout=60).execute({})
    assert f"/dataset/{dataset_id}" in str(info.value)
    assert info.value.dataset_id == dataset_id


def test_soft_fail_skips_a_failed_dataset(ip):
    ip.grid.fail_task("generate")
    dataset_id = ip.create_dataset(ONE_TASK)
    with pytest.raises(AirflowSkipException):
        sensor(dataset_id, soft_fail=True).execute({})


def test_stall_names_the_failed_tasks(ip, stalled):
    dataset_id = stalled(jobs=3)
    started = time.monotonic()
    with pytest.raises(IceProdDatasetFailedError, match="stalled") as info:
        sensor(dataset_id, stall_polls=3).execute({})
    assert time.monotonic() - started < 10
    assert "Failed tasks: generate (3)." in str(info.value)
    assert "failed: 3" in str(info.value) and "idle: 3" in str(info.value)


@pytest.mark.parametrize(
    ("mode", "error"), [("fail", IceProdDatasetFailedError), ("timeout", AirflowSensorTimeout)]
)
def test_suspended(ip, slow, mode, error):
    dataset_id = slow()
    hook().suspend_dataset(dataset_id)
    with pytest.raises(error, match="suspended"):
        sensor(dataset_id, on_suspended=mode).execute({})


def test_suspended_wait_rides_it_out(ip, slow):
    dataset_id = slow()
    hook().suspend_dataset(dataset_id)
    with pytest.raises(AirflowSensorTimeout):  # still waiting when the timeout hits
        sensor(dataset_id, on_suspended="wait", timeout=0.5).execute({})


def test_unreadable_dataset_fails_clearly(ip):
    other = ip.create_dataset(ONE_TASK, username="bob", group="filtering", auth_groups_read=["filtering"])
    for ref in (other, NOT_A_DATASET):
        with pytest.raises(IceProdDatasetFailedError, match="cannot be read") as info:
            sensor(ref).execute({})
        assert "403" in str(info.value)
        assert "when no such dataset exists" in str(info.value)


def test_poke_mode_timeout(ip, slow):
    dataset_id = slow()
    started = time.monotonic()
    with pytest.raises(AirflowSensorTimeout):
        sensor(dataset_id, timeout=0.5).execute({})
    assert time.monotonic() - started < 5
    with pytest.raises(AirflowSkipException):
        sensor(dataset_id, timeout=0.3, soft_fail=True).execute({})


def test_deferrable_checks_once_then_defers_with_timeout_and_deadline(ip, slow):
    dataset_id = slow()
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        sensor(dataset_id, deferrable=True, timeout=120, stall_polls=4, cancel_on_kill=True).execute({})
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    assert deferred.timeout == timedelta(seconds=120)
    trig = deferred.trigger
    assert isinstance(trig, IceProdDatasetTrigger)
    _, kwargs = trig.serialize()
    assert kwargs["dataset_id"] == dataset_id
    assert kwargs["wait_options"] == WaitOptions(stall_polls=4, poll_interval=0.1).to_dict()
    assert before + 120 <= kwargs["deadline"] <= time.time() + 120
    assert kwargs["cancel_on_kill"] is True
    assert kwargs["hook_params"] == {"retry_limit": 1, "retry_delay": 0.01}  # passed on unchanged
    assert kwargs["wait_state"]["polls"] == 1  # the one check on the worker travels along


def test_deferrable_does_not_defer_a_finished_dataset(ip):
    ip.grid.task_duration = 0.05
    dataset_id = ip.create_dataset(ONE_TASK)
    wait_for_status(ip, dataset_id, "complete")
    result = sensor(dataset_id, deferrable=True).execute({})
    assert result["status"] == "success"


def test_deferrable_initial_check_respects_soft_fail(ip):
    with pytest.raises(AirflowSkipException):
        sensor(NOT_A_DATASET, deferrable=True, soft_fail=True).execute({})


def test_execute_complete(ip):
    s = sensor(NOT_A_DATASET)
    ok = make_event("success", NOT_A_DATASET, outcome="success", message="done")
    assert s.execute_complete({}, ok) == ok
    with pytest.raises(IceProdDatasetFailedError, match=f"broken See .*/dataset/{NOT_A_DATASET}"):
        s.execute_complete({}, make_event("failed", NOT_A_DATASET, outcome="errors", message="broken"))
    with pytest.raises(AirflowSensorTimeout):
        s.execute_complete({}, make_event("timeout", NOT_A_DATASET, outcome="timeout", message="late"))
    for garbage in (None, {}, "success", {"status": "success"}, {"status": "weird", "dataset_id": "x"}):
        with pytest.raises(AirflowException):
            s.execute_complete({}, garbage)


def test_invalid_arguments_fail_at_parse_time():
    with pytest.raises(IceProdConfigError, match="'dataset'"):
        sensor("not-a-dataset")
    with pytest.raises(IceProdConfigError):
        sensor(0)
    with pytest.raises(ValueError, match="on_suspended"):
        sensor(1, on_suspended="ignore")
    with pytest.raises(ValueError, match="target_states"):
        sensor(1, target_states=["done"])
    sensor("{{ ti.xcom_pull(task_ids='submit')['dataset_id'] }}")  # templated: checked after rendering


def test_sensor_and_trigger_imports_stay_light():
    """Our modules add nothing heavy on top of what Airflow itself imports (the hook loads lazily,
    also when a sensor or trigger without ``hook_params`` is built)."""
    import json
    import subprocess
    import sys

    code = (
        "import sys, json\n"
        "from airflow.sdk import BaseSensorOperator, conf\n"
        "import airflow.triggers.base\n"
        "before = set(sys.modules)\n"
        "import airflow_provider_iceprod.sensors.dataset, airflow_provider_iceprod.triggers.dataset\n"
        "from airflow_provider_iceprod.sensors.dataset import IceProdDatasetSensor\n"
        "from airflow_provider_iceprod.triggers.dataset import IceProdDatasetTrigger\n"
        "IceProdDatasetSensor(task_id='wait', dataset=12, hook_params={})\n"  # built as a DAG file does
        "IceProdDatasetTrigger('0' * 32, hook_params=None)\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    added = json.loads(out.strip().splitlines()[-1])
    heavy = ("httpx", "tenacity", "tornado", "rest_tools", "jsonschema", "jwt", "cryptography")
    assert not [m for m in added if m.split(".")[0] in heavy]
    assert not [
        m for m in added if m.startswith(("airflow_provider_iceprod.hooks", "airflow_provider_iceprod.auth"))
    ]
    assert "airflow_provider_iceprod.transport" not in added


# ------------------------------------------------------------------ the sync loop operators use


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg, *args):
        self.lines.append(msg % args)

    def warning(self, msg, *args):
        self.lines.append(msg % args)


def test_wait_for_dataset_success_and_deadline(ip, slow):
    ip.grid.task_duration = 0.1
    done = ip.create_dataset(TWO_TASKS, jobs_submitted=2)
    log = _Log()
    event = wait_for_dataset(hook(), done, WaitOptions(poll_interval=0.1), deadline=time.time() + 30, log=log)
    assert event["status"] == "success"
    assert any("jobs 2/2 complete" in line for line in log.lines)
    waiting = slow()
    with pytest.raises(AirflowSensorTimeout):
        wait_for_dataset(hook(), waiting, WaitOptions(poll_interval=0.1), deadline=time.time() + 0.4, log=log)


def test_wait_for_dataset_tolerates_transient_errors(ip):
    ip.grid.task_duration = 0.1
    dataset_id = ip.create_dataset(ONE_TASK)
    opts = WaitOptions(poll_interval=0.05, tolerate_errors=2)
    ip.faults.add(r"task_counts/status", status=503, times=4)  # retry_limit=1: two polls fail
    log = _Log()
    assert wait_for_dataset(hook(), dataset_id, opts, deadline=None, log=log)["status"] == "success"
    assert sum("tolerated" in line for line in log.lines) == 2
    ip.faults.add(r"task_counts/status", status=503)
    with pytest.raises(IceProdTransientError, match="503"):
        wait_for_dataset(hook(), dataset_id, opts, deadline=None, log=_Log())
