"""IceProdHook calls against the stand-in over HTTP: results, request counts, IceProd's errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from hook_helpers import CONFIG, api_requests

from airflow_provider_iceprod.exceptions import (
    IceProdActionError,
    IceProdNotFoundError,
    IceProdPermissionError,
    IceProdValidationError,
)
from airflow_provider_iceprod.hooks.iceprod import IceProdHook
from airflow_provider_iceprod.models import ActionRequest, Dataset, DatasetProgress, Job, Task
from airflow_provider_iceprod.testing.server import LocalIceProd

ONE_REQUEST_CALLS: list[tuple[str, str, Callable[[IceProdHook, str], Any]]] = [
    ("get_dataset", "GET /datasets/{dataset_id}", lambda h, d: h.get_dataset(d)),
    ("get_config", "GET /config/{dataset_id}", lambda h, d: h.get_config(d)),
    ("job_counts", "GET /datasets/{dataset_id}/job_counts/status", lambda h, d: h.job_counts(d)),
    ("task_counts", "GET /datasets/{dataset_id}/task_counts/status", lambda h, d: h.task_counts(d)),
    (
        "task_counts_by_name",
        "GET /datasets/{dataset_id}/task_counts/name_status",
        lambda h, d: h.task_counts_by_name(d),
    ),
    ("task_stats", "GET /datasets/{dataset_id}/task_stats", lambda h, d: h.task_stats(d)),
    (
        "list_tasks",
        "GET /datasets/{dataset_id}/tasks",
        lambda h, d: h.list_tasks(d, status=["idle", "waiting"]),
    ),
    ("list_jobs", "GET /datasets/{dataset_id}/jobs", lambda h, d: h.list_jobs(d, status="processing")),
    ("job_summaries", "GET /datasets/{dataset_id}/job_summaries/status", lambda h, d: h.job_summaries(d)),
    ("task_summaries", "GET /datasets/{dataset_id}/task_summaries/status", lambda h, d: h.task_summaries(d)),
    ("list_datasets", "GET /datasets", lambda h, d: h.list_datasets(users="alice", keys=["dataset_id"])),
    ("dataset_summaries", "GET /dataset_summaries/status", lambda h, d: h.dataset_summaries()),
    ("set_priority", "PUT /datasets/{dataset_id}/priority", lambda h, d: h.set_priority(d, 0.9)),
    ("set_description", "PUT /datasets/{dataset_id}/description", lambda h, d: h.set_description(d, "new")),
    ("truncate", "POST /datasets/{dataset_id}/dataset_actions/truncate", lambda h, d: h.truncate_dataset(d)),
    (
        "set_task_requirements",
        "PATCH /datasets/{dataset_id}/task_actions/bulk_requirements/{name}",
        lambda h, d: h.set_task_requirements(d, "process", {"memory": 4.0}),
    ),
]


def test_happy_path_costs_exactly_one_request(hook: IceProdHook, ip: LocalIceProd, dataset_id: str) -> None:
    # One server for all calls (starting one per call would only slow the suite down).
    for name, route, call in ONE_REQUEST_CALLS:
        ip.reset_counters()
        call(hook, dataset_id)
        assert api_requests(ip) == {route: 1}, name
        assert ip.counters.total() == 1, name  # no token request either: the access token is cached


def test_typed_results_keep_the_raw_document(hook: IceProdHook, ip: LocalIceProd, dataset_id: str) -> None:
    dataset = hook.get_dataset(dataset_id)
    assert isinstance(dataset, Dataset)
    assert (dataset.dataset_id, dataset.username, dataset.jobs_submitted, dataset.tasks_per_job) == (
        dataset_id,
        "alice",
        2,
        2,
    )
    assert dataset.raw["description"] == "fixture dataset"
    job_id, job_doc = next(iter(hook.list_jobs(dataset_id).items()))
    job = hook.get_job(dataset_id, job_id)
    assert isinstance(job, Job) and job.raw == job_doc
    task_id = next(iter(hook.list_tasks(dataset_id, name="process")))
    task = hook.get_task(dataset_id, task_id)
    assert isinstance(task, Task) and task.name == "process" and task.raw["task_id"] == task_id
    assert sum(hook.task_counts(dataset_id).values()) == 4
    assert set(hook.task_counts_by_name(dataset_id)) == {"generate", "process"}


def test_settings_changes_reach_iceprod(hook: IceProdHook, ip: LocalIceProd, dataset_id: str) -> None:
    hook.set_priority(dataset_id, 1)  # an int: the hook sends a float as IceProd requires
    hook.set_description(dataset_id, "renamed")
    hook.set_task_requirements(dataset_id, "process", {"memory": 4.0})
    doc = ip.dataset(dataset_id)
    assert (doc["priority"], doc["description"]) == (1.0, "renamed")
    assert all(t["requirements"]["memory"] == 4.0 for t in ip.tasks(dataset_id) if t["name"] == "process")
    hook.truncate_dataset(dataset_id)
    assert ip.dataset(dataset_id)["truncated"] is True


def test_add_jobs_grows_jobs_submitted(hook: IceProdHook, ip: LocalIceProd, dataset_id: str) -> None:
    assert hook.add_jobs(dataset_id, 3) == 5
    assert ip.dataset(dataset_id)["jobs_submitted"] == 5
    assert ip.dataset(dataset_id)["tasks_submitted"] == 10


def test_dataset_number_is_resolved_once_per_process(
    hook: IceProdHook, ip: LocalIceProd, dataset_id: str
) -> None:
    number = ip.dataset(dataset_id)["dataset"]
    assert hook.get_dataset(number).dataset_id == dataset_id
    assert api_requests(ip) == {"GET /datasets": 1, "GET /datasets/{dataset_id}": 1}
    ip.reset_counters()
    other = IceProdHook(retry_delay=0.01)  # another hook in the same process
    assert other.resolve_dataset_id(str(number)) == dataset_id
    assert hook.get_dataset(str(number)).dataset == number
    assert api_requests(ip) == {"GET /datasets/{dataset_id}": 1}


def test_unknown_dataset_number(hook: IceProdHook, dataset_id: str) -> None:
    with pytest.raises(IceProdNotFoundError, match="no dataset number 999"):
        hook.get_dataset(999)


def test_dataset_progress(hook: IceProdHook, ip: LocalIceProd, dataset_id: str) -> None:
    progress = hook.dataset_progress(dataset_id)
    assert isinstance(progress, DatasetProgress)
    assert progress.status == "processing" and progress.jobs_submitted == 2
    assert progress.job_counts == {"processing": 2}
    assert sum(progress.task_counts.values()) == 4
    assert len(api_requests(ip)) == 3 and ip.counters.total() == 3


def test_validation_error_keeps_iceprod_text_and_is_not_retried(
    hook: IceProdHook, ip: LocalIceProd, dataset_id: str
) -> None:
    task_id = next(iter(hook.list_tasks(dataset_id, name="process", status="idle")))
    ip.reset_counters()
    with pytest.raises(IceProdValidationError) as info:
        hook.set_task_status(dataset_id, task_id, "complete")  # idle -> complete is no transition
    err = info.value
    assert err.status_code == 400
    assert err.iceprod_message == "Bad state transition for status"
    assert (
        str(err) == f"PUT /datasets/{dataset_id}/tasks/{task_id}/status: 400 Bad state transition for status"
    )
    assert ip.counters.get("PUT /datasets/{dataset_id}/tasks/{task_id}/status") == 1


def test_permission_error_says_missing_datasets_look_alike(hook: IceProdHook, ip: LocalIceProd) -> None:
    with pytest.raises(IceProdPermissionError) as info:
        hook.get_dataset("0" * 32)
    assert info.value.status_code == 403
    assert info.value.iceprod_message == "attr not found"
    assert "also answers 403 for a dataset that does not exist" in str(info.value)
    assert ip.counters.get("GET /datasets/{dataset_id}") == 1


def test_permission_error_for_another_users_dataset(hook: IceProdHook, ip: LocalIceProd) -> None:
    bobs = ip.create_dataset(username="bob", description="bob's")
    assert hook.get_dataset(bobs).username == "bob"  # IceCube members may read
    ip.reset_counters()
    with pytest.raises(IceProdPermissionError):
        hook.set_priority(bobs, 0.1)  # but not write
    assert api_requests(ip) == {"PUT /datasets/{dataset_id}/priority": 1}


def test_not_found_keeps_iceprod_text_and_is_not_retried(
    hook: IceProdHook, ip: LocalIceProd, dataset_id: str
) -> None:
    with pytest.raises(IceProdNotFoundError) as info:
        hook.get_task(dataset_id, "f" * 32)
    assert info.value.iceprod_message == "Task not found"
    assert str(info.value).endswith(": 404 Task not found")
    assert ip.counters.get("GET /datasets/{dataset_id}/tasks/{task_id}") == 1


def test_unknown_route_is_named(hook: IceProdHook, ip: LocalIceProd) -> None:
    transport = hook._transports["api"]
    with pytest.raises(IceProdNotFoundError, match="unknown route"):
        transport.request("GET", "/no/such/route")


def test_suspend_and_resume_report_progress(hook: IceProdHook, ip: LocalIceProd, dataset_id: str) -> None:
    seen: list[ActionRequest] = []
    done = hook.suspend_dataset(dataset_id, on_progress=seen.append)
    assert done.status == "complete" and done.progress == 100
    assert seen[-1].status == "complete" and len(seen) >= 2  # queued/processing first
    assert ip.dataset(dataset_id)["status"] == "suspended"
    assert set(ip.task_counts(dataset_id)) == {"suspended"}
    hook.resume_dataset(dataset_id)
    assert ip.dataset(dataset_id)["status"] == "processing"
    assert "suspended" not in ip.task_counts(dataset_id)


def test_retry_failed_tasks_and_hard_reset(hook: IceProdHook, ip: LocalIceProd, dataset_id: str) -> None:
    task_ids = list(hook.list_tasks(dataset_id, name="generate"))
    hook.bulk_task_status(dataset_id, "failed", task_ids)
    assert ip.task_counts(dataset_id).get("failed") == 2
    hook.retry_failed_tasks(dataset_id)
    assert "failed" not in ip.task_counts(dataset_id)
    hook.hard_reset_dataset(dataset_id)
    assert ip.dataset(dataset_id)["status"] == "processing"


def test_action_error_keeps_iceprod_message(hook: IceProdHook, ip: LocalIceProd, dataset_id: str) -> None:
    with pytest.raises(IceProdActionError) as info:
        hook.task_status_action(dataset_id, "reset", task_ids=["f" * 32])  # fails when the request runs
    assert info.value.request_id
    assert info.value.iceprod_message and "Task not found" in info.value.iceprod_message
    assert info.value.iceprod_message in str(info.value)


def test_job_and_task_bulk_actions(hook: IceProdHook, ip: LocalIceProd, dataset_id: str) -> None:
    job_ids = list(hook.list_jobs(dataset_id))
    hook.bulk_task_action(dataset_id, "suspend", job_ids=job_ids[:1])
    assert ip.task_counts(dataset_id).get("suspended") == 2
    hook.bulk_task_action(dataset_id, "reset")
    assert "suspended" not in ip.task_counts(dataset_id)
    hook.bulk_job_action(dataset_id, "suspend", job_ids[:1])
    assert sorted(j["status"] for j in ip.jobs(dataset_id)) == ["processing", "suspended"]
    hook.set_job_status(dataset_id, job_ids[0], "processing")
    assert {j["status"] for j in ip.jobs(dataset_id)} == {"processing"}


def test_materialize_creates_jobs(hook: IceProdHook, ip: LocalIceProd) -> None:
    dataset_id = ip.create_dataset(CONFIG, jobs_submitted=3)
    assert ip.jobs(dataset_id) == []
    done = hook.materialize(dataset_id)
    assert done.status == "complete"
    assert len(ip.jobs(dataset_id)) == 3


def test_test_connection(hook: IceProdHook, ip: LocalIceProd) -> None:
    ok, message = hook.test_connection()
    assert ok, message
    assert message.startswith("Authenticated as alice (")


def test_test_connection_never_raises(ip: LocalIceProd, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_ICEPROD_BROKEN", ip.airflow_connection_json().replace(ip.api_url, "http://127.0.0.1:9")
    )
    ok, message = IceProdHook("iceprod_broken", retry_limit=0).test_connection()
    assert not ok and message


async def test_an_action_that_outlasts_its_timeout_names_its_request(
    hook: IceProdHook, ip: LocalIceProd, dataset_id: str
) -> None:
    from airflow_provider_iceprod.exceptions import IceProdActionTimeoutError, IceProdTransientError

    ip.actions.delay = 1.0  # each step of the request takes a second
    with pytest.raises(IceProdActionTimeoutError, match="may still run") as info:
        await hook.amaterialize(dataset_id, timeout=0.1)
    assert isinstance(info.value, IceProdTransientError) and info.value.request_id
    request_id = info.value.request_id
    # The sync twin, off the event loop (a blocking call on the loop fails at once).
    with pytest.raises(IceProdActionTimeoutError):
        await asyncio.to_thread(hook.wait_for_action, "materialization", request_id, timeout=0.1)
    ip.actions.delay = 0.02
    done = await asyncio.to_thread(hook.wait_for_action, "materialization", request_id, timeout=10)
    assert done.status == "complete"
