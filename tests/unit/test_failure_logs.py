"""The failed tasks' IceProd logs (stderr, then stdlog), read from the stand-in over real HTTP."""

from __future__ import annotations

import asyncio
import logging

import pytest

from airflow_provider_iceprod.exceptions import IceProdDatasetFailedError
from airflow_provider_iceprod.failure_logs import afailed_task_logs, failed_task_logs, mask
from airflow_provider_iceprod.hooks.iceprod import IceProdHook
from airflow_provider_iceprod.testing import LocalIceProd
from airflow_provider_iceprod.wait_loop import wait_for_dataset
from airflow_provider_iceprod.waiting import WaitOptions

TRAYS = [{"modules": [{"src": "/usr/bin/true"}]}]
TWO_TASKS = {
    "version": 3.2,
    "tasks": [
        {"name": "generate", "trays": TRAYS},
        {"name": "process", "depends": ["generate"], "trays": TRAYS},
    ],
}


def _stalled(ip: LocalIceProd, jobs: int = 1) -> str:
    ip.grid.task_duration = 0.05
    ip.grid.fail_task("generate")
    dataset_id = ip.create_dataset(TWO_TASKS, jobs_submitted=jobs, materialize=True)
    for _ in range(400):
        if sum(t["status"] == "failed" for t in ip.tasks(dataset_id)) == jobs:
            return dataset_id
        import time

        time.sleep(0.025)
    raise AssertionError("the generate tasks did not fail")


def _hook() -> IceProdHook:
    return IceProdHook("iceprod_default", retry_limit=0)


def test_stalled_wait_logs_the_failed_tasks_stderr_tail(iceprod_connection: LocalIceProd, caplog) -> None:
    ip = iceprod_connection
    dataset_id = _stalled(ip)
    (task,) = [t for t in ip.tasks(dataset_id) if t["status"] == "failed"]
    lines = [f"line {i}" for i in range(40)] + ["Traceback: ValueError: bad energy range"]
    ip.store.add_log(dataset_id, task["task_id"], "stderr", "\n".join(lines) + "\n")
    log = logging.getLogger("test.iceprod.failed")
    with (
        caplog.at_level(logging.INFO, logger="test.iceprod.failed"),
        pytest.raises(IceProdDatasetFailedError),
    ):
        wait_for_dataset(
            _hook(), dataset_id, WaitOptions(poll_interval=0.05, stall_polls=2), deadline=None, log=log
        )
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "test.iceprod.failed")
    assert "1 failed IceProd task(s); the end of their logs:" in text
    assert f"IceProd logs of failed task generate (job 0, task {task['task_id']}):" in text
    assert "stderr (last 20 of 41 lines):" in text
    assert "    Traceback: ValueError: bad energy range" in text
    assert "line 20" not in text and "line 21" in text  # bounded: the last 20 lines only
    assert "stdlog (1 line(s)):" in text and "running task generate on the simulated grid" in text
    assert text.index("stderr (") < text.index("stdlog (")


def test_first_few_failed_tasks_only(iceprod_connection: LocalIceProd) -> None:
    ip = iceprod_connection
    dataset_id = _stalled(ip, jobs=5)
    blocks = failed_task_logs(_hook(), dataset_id, max_tasks=3)
    assert blocks[0] == "5 failed IceProd task(s) (the first 3 of 5); the end of their logs:"
    assert [b.split("(", 1)[1].split(",")[0] for b in blocks[1:]] == ["job 0", "job 1", "job 2"]


def test_missing_log_is_said_plainly(iceprod_connection: LocalIceProd) -> None:
    ip = iceprod_connection
    dataset_id = _stalled(ip)
    (task,) = [t for t in ip.tasks(dataset_id) if t["status"] == "failed"]
    with ip.store.lock:
        ip.store.logs.pop(task["task_id"])
    blocks = failed_task_logs(_hook(), dataset_id)
    assert blocks[1].endswith("IceProd has no logs for this task (404 Log not found).")


async def test_async_twin_reads_the_same(iceprod_connection: LocalIceProd) -> None:
    ip = iceprod_connection
    dataset_id = _stalled(ip)
    expected = await asyncio.to_thread(failed_task_logs, _hook(), dataset_id)  # sync twin off the loop
    assert await afailed_task_logs(_hook(), dataset_id) == expected


def test_secrets_are_masked() -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    text = mask(
        f"Authorization: Bearer abcdefghijkl0123 token {jwt} refresh_token=r3fr3sh password: hunter22"
    )
    for secret in ("abcdefghijkl0123", jwt, "r3fr3sh", "hunter22"):
        assert secret not in text
    assert "Bearer ***" in text
