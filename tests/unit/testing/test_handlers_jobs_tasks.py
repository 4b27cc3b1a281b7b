"""Fidelity of the job, task, task-stats and log routes (reference §4.3-§4.5, §6), over plain HTTP."""

from __future__ import annotations

from typing import Any

import pytest
from standin_helpers import TWO_TASK_CONFIG, Api, assert_error, wait_for

from airflow_provider_iceprod.testing import LocalIceProd


@pytest.fixture
def frozen(iceprod_server: LocalIceProd) -> tuple[LocalIceProd, str]:
    """A dataset with 2 jobs x 2 tasks materialized, and the grid paused (nothing moves)."""
    iceprod_server.grid.pause()
    dataset_id = iceprod_server.create_dataset(TWO_TASK_CONFIG, jobs_submitted=2, materialize=True)
    return iceprod_server, dataset_id


def _jobs(api: Api, dataset_id: str) -> dict[str, Any]:
    return dict(api.ok("GET", f"/datasets/{dataset_id}/jobs"))


def _tasks(api: Api, dataset_id: str, **params: str) -> dict[str, Any]:
    return dict(api.ok("GET", f"/datasets/{dataset_id}/tasks", params=params))


# ------------------------------------------------------------------ jobs


def test_job_documents_and_filters(frozen: tuple[LocalIceProd, str], alice: Api) -> None:
    _, dataset_id = frozen
    jobs = _jobs(alice, dataset_id)
    assert len(jobs) == 2
    job = next(j for j in jobs.values() if j["job_index"] == 0)
    assert set(job) == {"dataset_id", "job_index", "job_id", "status", "status_changed"}
    assert job["status"] == "processing" and job["dataset_id"] == dataset_id
    assert alice.ok("GET", f"/datasets/{dataset_id}/jobs/{job['job_id']}") == job
    only = alice.ok("GET", f"/datasets/{dataset_id}/jobs", params={"job_index": "1", "keys": "status"})
    ((job_id, row),) = only.items()
    assert row == {"job_id": job_id, "status": "processing"}
    assert alice.ok("GET", f"/datasets/{dataset_id}/jobs", params={"status": "complete"}) == {}
    assert_error(
        alice("GET", f"/datasets/{dataset_id}/jobs", params={"status": "done"}), 400, "Unknown status"
    )
    assert_error(
        alice("GET", f"/datasets/{dataset_id}/jobs", params={"job_index": "x"}),
        400,
        'Bad argument "job_index": must be integer',
    )
    assert_error(alice("GET", f"/datasets/{dataset_id}/jobs/ffff"), 404, "Job not found")
    assert alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {"processing": 2}
    summary = alice.ok("GET", f"/datasets/{dataset_id}/job_summaries/status")
    assert sorted(summary["processing"]) == sorted(jobs)


def test_job_routes_before_materialization_are_empty(
    iceprod_server: LocalIceProd, alice: Api, admin: Api
) -> None:
    iceprod_server.grid.pause()
    dataset_id = iceprod_server.create_dataset(jobs_submitted=2)
    assert alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {}
    assert alice.ok("GET", f"/datasets/{dataset_id}/task_counts/status") == {}
    # an admin asking about an unknown dataset gets empty answers, a user 403
    assert admin.ok("GET", "/datasets/abc/job_counts/status") == {}
    assert_error(alice("GET", "/datasets/abc/job_counts/status"), 403, "attr not found")


def test_job_status_state_machine(frozen: tuple[LocalIceProd, str], alice: Api) -> None:
    _, dataset_id = frozen
    job_id = next(iter(_jobs(alice, dataset_id)))
    path = f"/datasets/{dataset_id}/jobs/{job_id}/status"
    assert alice.ok("PUT", path, {"status": "suspended"}) == {}
    assert alice.ok("PUT", path, {"status": "suspended"}) == {}
    assert_error(alice("PUT", path, {"status": "complete"}), 400, "Bad state transition for status")
    assert alice.ok("PUT", path, {"status": "processing"}) == {}
    assert alice.ok("PUT", path, {"status": "errors"}) == {}
    assert_error(alice("PUT", path, {"status": "suspended"}), 400, "Bad state transition for status")
    assert_error(alice("PUT", path, {}), 400, "Missing status in body")
    assert_error(alice("PUT", path, {"status": "idle"}), 400, "Bad status")
    assert_error(
        alice("PUT", f"/datasets/{dataset_id}/jobs/ffff/status", {"status": "errors"}), 404, "Job not found"
    )


def test_job_bulk_actions(frozen: tuple[LocalIceProd, str], alice: Api) -> None:
    _, dataset_id = frozen
    jobs = sorted(_jobs(alice, dataset_id))
    base = f"/datasets/{dataset_id}/job_actions"
    assert_error(alice("POST", f"{base}/bulk_status/suspended", {}), 400, "Missing jobs in body")
    assert_error(alice("POST", f"{base}/bulk_status/nope", {"jobs": jobs}), 400, "Bad status")
    assert_error(alice("POST", f"{base}/bulk_status/suspended", {"jobs": ["ffff"]}), 404, "Jobs not found")
    assert alice.ok("POST", f"{base}/bulk_status/suspended", {"jobs": jobs[:1]}) == {}
    assert alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {"processing": 1, "suspended": 1}
    # transitions are checked: suspended -> complete is not allowed, nothing changes
    assert_error(alice("POST", f"{base}/bulk_status/complete", {"jobs": jobs[:1]}), 404, "Jobs not found")
    assert alice.ok("POST", f"{base}/bulk_suspend") == {}
    assert alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {"suspended": 2}
    assert alice.ok("POST", f"{base}/bulk_reset", {"jobs": jobs[:1]}) == {}
    assert alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {"processing": 1, "suspended": 1}
    alice.ok("POST", f"{base}/bulk_status/complete", {"jobs": jobs[:1]})
    assert alice.ok("POST", f"{base}/bulk_hard_reset") == {}  # even complete jobs
    assert alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {"processing": 2}
    too_many = {"jobs": [f"j{i}" for i in range(100001)]}
    assert_error(
        alice("POST", f"{base}/bulk_suspend", too_many), 400, "Too many jobs specified (limit: 100k)"
    )


# ------------------------------------------------------------------ tasks


def test_task_documents_and_filters(frozen: tuple[LocalIceProd, str], alice: Api) -> None:
    _, dataset_id = frozen
    tasks = _tasks(alice, dataset_id)
    assert len(tasks) == 4
    generate = next(t for t in tasks.values() if t["name"] == "generate" and t["job_index"] == 0)
    process = next(t for t in tasks.values() if t["name"] == "process" and t["job_index"] == 0)
    assert set(generate) == {
        "dataset_id", "job_id", "task_index", "job_index", "name", "depends", "requirements", "task_id",
        "status_changed", "failures", "evictions", "walltime", "walltime_err", "walltime_err_n", "site",
        "status", "priority", "instance_id",
    }  # fmt: skip
    # the submitted config is stored defaults-filled, so materialized requirements carry the defaults
    assert generate["requirements"] == {"cpu": 1, "memory": 2.0, "disk": 1.0, "time": 1.0, "os": []}
    # IceProd 3.2's schema defaults requirements to {}, then fills that too (checked by tests/fidelity)
    assert process["requirements"] == {"cpu": 1, "memory": 1.0, "disk": 1.0, "time": 1.0, "os": []}
    assert generate["depends"] == [] and process["depends"] == [generate["task_id"]]
    assert (generate["status"], generate["task_index"], process["task_index"]) == ("idle", 0, 1)
    assert set(_tasks(alice, dataset_id, name="process")) == {
        t["task_id"] for t in tasks.values() if t["name"] == "process"
    }
    assert len(_tasks(alice, dataset_id, job_id=generate["job_id"])) == 2
    assert len(_tasks(alice, dataset_id, job_index="1", status="idle|waiting")) == 2
    projected = _tasks(alice, dataset_id, keys="status|requirements.memory")
    assert projected[generate["task_id"]] == {
        "task_id": generate["task_id"],
        "status": "idle",
        "requirements": {"memory": 2.0},
    }
    single = alice.ok("GET", f"/datasets/{dataset_id}/tasks/{generate['task_id']}", params={"keys": "name"})
    assert single == {"task_id": generate["task_id"], "name": "generate"}
    assert_error(alice("GET", f"/datasets/{dataset_id}/tasks/ffff"), 404, "Task not found")
    assert_error(
        alice("GET", f"/datasets/{dataset_id}/tasks", params={"status": "done"}), 400, "Unknown task status"
    )
    assert_error(
        alice("GET", f"/datasets/{dataset_id}/tasks", params={"job_index": "one"}),
        400,
        'Bad argument "job_index": must be integer',
    )


def test_task_counts_and_summaries(frozen: tuple[LocalIceProd, str], alice: Api, admin: Api) -> None:
    _, dataset_id = frozen
    assert alice.ok("GET", f"/datasets/{dataset_id}/task_counts/status") == {"idle": 4}
    assert alice.ok("GET", f"/datasets/{dataset_id}/task_counts/status", params={"status": "waiting"}) == {}
    assert alice.ok("GET", f"/datasets/{dataset_id}/task_counts/status", params={"gpu": "true"}) == {}
    assert alice.ok("GET", f"/datasets/{dataset_id}/task_counts/status", params={"gpu": "false"}) == {
        "idle": 4
    }
    assert_error(
        alice("GET", f"/datasets/{dataset_id}/task_counts/status", params={"status": "x"}),
        400,
        "Unknown task status",
    )
    assert alice.ok("GET", f"/datasets/{dataset_id}/task_counts/name_status") == {
        "generate": {"idle": 2},
        "process": {"idle": 2},
    }
    assert len(alice.ok("GET", f"/datasets/{dataset_id}/task_summaries/status")["idle"]) == 4
    assert alice.ok("GET", f"/datasets/{dataset_id}/task_stats") == {}  # none complete yet
    # the all-dataset counts are IceProd internals
    assert_error(alice("GET", "/task_counts/status"), 403, "authorization failed")
    assert admin.ok("GET", "/task_counts/status") == {"idle": 4}


def test_task_status_state_machine(frozen: tuple[LocalIceProd, str], alice: Api) -> None:
    _, dataset_id = frozen
    task_id = next(iter(_tasks(alice, dataset_id, name="generate")))
    path = f"/datasets/{dataset_id}/tasks/{task_id}/status"
    assert_error(alice("PUT", path, {"status": "complete"}), 400, "Bad state transition for status")
    for status in ("waiting", "queued", "processing", "failed", "idle", "suspended", "waiting"):
        assert alice.ok("PUT", path, {"status": status}) == {}, status
    assert alice.ok("PUT", path, {"status": "waiting"}) == {}  # same status: fine
    assert_error(alice("PUT", path, {}), 400, "Missing status in body")
    assert_error(alice("PUT", path, {"status": "errors"}), 400, "Bad status")
    assert_error(
        alice("PUT", f"/datasets/{dataset_id}/tasks/ffff/status", {"status": "idle"}), 404, "Task not found"
    )


def test_task_bulk_actions(frozen: tuple[LocalIceProd, str], alice: Api) -> None:
    _, dataset_id = frozen
    tasks = _tasks(alice, dataset_id)
    ids = sorted(tasks)
    base = f"/datasets/{dataset_id}/task_actions"
    counts = f"/datasets/{dataset_id}/task_counts/status"
    assert_error(alice("POST", f"{base}/bulk_status/failed", {"tasks": []}), 400, "Missing tasks in body")
    assert_error(alice("POST", f"{base}/bulk_status/nope", {"tasks": ids}), 400, "Bad status")
    assert_error(alice("POST", f"{base}/bulk_status/failed", {"tasks": ["ffff"]}), 404, "Tasks not found")
    # no transition check: idle -> complete is accepted
    assert alice.ok("POST", f"{base}/bulk_status/complete", {"tasks": ids[:1]}) == {}
    assert alice.ok("GET", counts) == {"idle": 3, "complete": 1}
    assert alice.ok("POST", f"{base}/bulk_suspend") == {}
    assert alice.ok("GET", counts) == {"suspended": 3, "complete": 1}
    job_id = tasks[ids[1]]["job_id"]
    assert alice.ok("POST", f"{base}/bulk_reset", {"jobs": [job_id]}) == {}
    in_job = sum(1 for t in tasks.values() if t["job_id"] == job_id and t["task_id"] != ids[0])
    assert alice.ok("GET", counts).get("idle") == in_job
    assert alice.ok("POST", f"{base}/bulk_hard_reset", {"tasks": ids[:1]}) == {}  # complete -> idle
    assert alice.ok("GET", f"/datasets/{dataset_id}/tasks/{ids[0]}")["status"] == "idle"
    assert alice.ok("POST", f"{base}/bulk_hard_reset") == {}
    assert alice.ok("GET", counts) == {"idle": 4}


def test_bulk_requirements(frozen: tuple[LocalIceProd, str], alice: Api) -> None:
    _, dataset_id = frozen
    path = f"/datasets/{dataset_id}/task_actions/bulk_requirements"
    assert alice.ok("PATCH", f"{path}/generate", {"memory": 4.0, "os": ["RHEL_9_x86_64"]}) == {}
    generate = _tasks(alice, dataset_id, name="generate")
    expected = {"cpu": 1, "memory": 4.0, "disk": 1.0, "time": 1.0, "os": ["RHEL_9_x86_64"]}
    assert all(t["requirements"] == expected for t in generate.values())
    # POST replaces: numbers only grow ($max), keys not given are removed
    assert alice.ok("POST", f"{path}/generate", {"memory": 3.0, "gpu": 1}) == {}
    generate = _tasks(alice, dataset_id, name="generate")
    assert all(t["requirements"] == {"memory": 4.0, "gpu": 1} for t in generate.values())
    assert_error(alice("PATCH", f"{path}/generate", {"colour": "red"}), 400, "Invalid resource types")
    assert_error(alice("PATCH", f"{path}/generate", {}), 400, "Missing body")
    assert_error(alice("PATCH", f"{path}/generate", {"cpu": 1.5}), 400, "Bad type for cpu, should be int")
    assert_error(
        alice("PATCH", f"{path}/generate", {"memory": "4G"}), 400, "Bad type for memory, should be float"
    )
    assert_error(alice("PATCH", f"{path}/generate", {"os": "RHEL"}), 400, "Bad type for os, should be list")
    assert_error(alice("PATCH", f"{path}/nosuchtask", {"memory": 1.0}), 404, "Tasks not found")


def test_stats_and_logs_of_finished_tasks(iceprod_server: LocalIceProd, alice: Api) -> None:
    iceprod_server.grid.fail_task("process")
    dataset_id = alice.submit(jobs=1)
    wait_for(lambda: alice.ok("GET", f"/datasets/{dataset_id}")["status"] == "errors")
    tasks = {t["name"]: t for t in _tasks(alice, dataset_id).values()}
    generate, process = tasks["generate"], tasks["process"]
    assert process["failures"] == 1 and process["walltime_err_n"] == 1 and process["walltime_err"] > 0
    assert generate["walltime"] > 0
    stats = alice.ok("GET", f"/datasets/{dataset_id}/task_stats")
    assert list(stats) == ["generate"]  # only complete tasks count
    assert stats["generate"]["count"] == 1 and stats["generate"]["stddev_hrs"] is None
    per_task = alice.ok(
        "GET", f"/datasets/{dataset_id}/tasks/{process['task_id']}/task_stats", params={"last": "true"}
    )
    ((stat_id, stat),) = per_task.items()
    assert stat["task_stat_id"] == stat_id and stat["stats"]["error"] is True
    logs = alice.ok(
        "GET", f"/datasets/{dataset_id}/tasks/{process['task_id']}/logs", params={"group": "true"}
    )
    assert {log["name"] for log in logs["logs"]} == {"stdout", "stderr", "stdlog"}
    assert set(logs["logs"][0]) == {"log_id", "name", "data", "dataset_id", "task_id", "timestamp"}
    one = alice.ok(
        "GET",
        f"/datasets/{dataset_id}/tasks/{process['task_id']}/logs",
        params={"num": "1", "keys": "name|data"},
    )
    assert len(one["logs"]) == 1 and set(one["logs"][0]) <= {"name", "data"}
    assert_error(alice("GET", f"/datasets/{dataset_id}/tasks/ffff/logs"), 404, "Log not found")
    assert_error(
        alice("GET", f"/datasets/{dataset_id}/tasks/{process['task_id']}/logs", params={"order": "up"}),
        400,
        'bad order param. should be "asc" or "desc".',
    )
    assert_error(
        alice("GET", f"/datasets/{dataset_id}/tasks/{process['task_id']}/logs", params={"num": "x"}),
        400,
        "bad num param. must be int",
    )
    system = Api(iceprod_server, None)
    system.headers = {"Authorization": f"Bearer {iceprod_server.service_access_token()}"}
    assert_error(
        system("GET", f"/datasets/{dataset_id}/tasks/{process['task_id']}/logs"), 403, "authorization failed"
    )


def test_cleanup_cron_suspends_failed_tasks_of_errored_jobs() -> None:
    """IceProd's dataset_cleanup: a failed task in an `errors` job of a still-processing dataset
    becomes `suspended` (the dataset waits for its other jobs, here one not materialized yet)."""
    config = dict(TWO_TASK_CONFIG, tasks=[TWO_TASK_CONFIG["tasks"][0]])
    with LocalIceProd(grid_tick=0.02, task_duration=0.05, materialize_interval=None) as ip:
        api = Api(ip, "alice")
        ip.grid.fail_task("generate")
        dataset_id = ip.create_dataset(config, jobs_submitted=2)
        ip.grid.materialize(dataset_id, 0.0, num=1)
        wait_for(lambda: api.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {"errors": 1})
        wait_for(lambda: api.ok("GET", f"/datasets/{dataset_id}/task_counts/status") == {"suspended": 1})
        assert api.ok("GET", f"/datasets/{dataset_id}")["status"] == "processing"
    with LocalIceProd(
        grid_tick=0.02, task_duration=0.05, materialize_interval=None, dataset_cleanup=False
    ) as ip:
        api = Api(ip, "alice")
        ip.grid.fail_task("generate")
        dataset_id = ip.create_dataset(config, jobs_submitted=2)
        ip.grid.materialize(dataset_id, 0.0, num=1)
        wait_for(lambda: api.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {"errors": 1})
        assert api.ok("GET", f"/datasets/{dataset_id}/task_counts/status") == {"failed": 1}


def test_shared_job_and_task_routes_keep_their_own_texts(
    frozen: tuple[LocalIceProd, str], alice: Api
) -> None:
    """Job and task routes share their code; limits and unexpected errors still read as IceProd's do."""
    _, dataset_id = frozen
    too_many = {"tasks": [f"t{i}" for i in range(100001)]}
    limit = "Too many tasks specified (limit: 100k)"
    assert_error(
        alice("POST", f"/datasets/{dataset_id}/task_actions/bulk_status/failed", too_many), 400, limit
    )
    assert_error(alice("POST", f"/datasets/{dataset_id}/task_actions/bulk_suspend", too_many), 400, limit)
    job_id = next(iter(_jobs(alice, dataset_id)))
    task_id = next(iter(_tasks(alice, dataset_id)))
    # a JSON string that contains the key: IceProd indexes it and fails with its handler's name
    for path, handler in (
        (f"jobs/{job_id}/status", "DatasetJobsStatusHandler"),
        (f"tasks/{task_id}/status", "DatasetTasksStatusHandler"),
    ):
        assert_error(alice("PUT", f"/datasets/{dataset_id}/{path}", "status"), 500, f"Error in {handler}")
    for path, handler in (
        ("job_actions/bulk_hard_reset", "DatasetJobBulkHardResetHandler"),
        ("task_actions/bulk_suspend", "DatasetTaskBulkSuspendHandler"),
    ):
        assert_error(alice("POST", f"/datasets/{dataset_id}/{path}", "jobs"), 500, f"Error in {handler}")
