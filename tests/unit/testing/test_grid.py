"""The simulated grid: materialization, task progression, completion rules, failures and the stall."""

from __future__ import annotations

from standin_helpers import TWO_TASK_CONFIG, Api, wait_for

from airflow_provider_iceprod.testing import LocalIceProd


def _status(api: Api, dataset_id: str) -> str:
    return str(api.ok("GET", f"/datasets/{dataset_id}")["status"])


def test_submit_materialize_and_complete(iceprod_server: LocalIceProd, alice: Api) -> None:
    dataset_id = alice.submit(jobs=3)
    dataset = alice.ok("GET", f"/datasets/{dataset_id}")
    assert dataset["tasks_per_job"] == 2 and dataset["tasks_submitted"] == 6
    assert dataset["username"] == "alice" and dataset["group"] == "users"
    wait_for(lambda: _status(alice, dataset_id) == "complete")
    assert alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {"complete": 3}
    assert alice.ok("GET", f"/datasets/{dataset_id}/task_counts/status") == {"complete": 6}
    assert alice.ok("GET", f"/datasets/{dataset_id}/task_counts/name_status") == {
        "generate": {"complete": 3},
        "process": {"complete": 3},
    }
    stats = alice.ok("GET", f"/datasets/{dataset_id}/task_stats")
    assert list(stats) == ["generate", "process"] and stats["generate"]["count"] == 3
    assert stats["generate"]["efficiency"] == 1.0


def test_dependencies_run_in_order(iceprod_server: LocalIceProd, alice: Api) -> None:
    iceprod_server.grid.pause()
    dataset_id = alice.submit(jobs=1)
    alice.ok("POST", "/actions/materialization", {"dataset_id": dataset_id})
    wait_for(lambda: len(iceprod_server.tasks(dataset_id)) == 2)
    tasks = {t["name"]: t for t in iceprod_server.tasks(dataset_id)}
    assert tasks["process"]["depends"] == [tasks["generate"]["task_id"]]
    assert tasks["generate"]["status"] == tasks["process"]["status"] == "idle"
    seen: list[tuple[str, str]] = []

    def progressed() -> bool:
        now = {t["name"]: t["status"] for t in iceprod_server.tasks(dataset_id)}
        pair = (now["generate"], now["process"])
        if not seen or seen[-1] != pair:
            seen.append(pair)
        return now["process"] == "complete"

    iceprod_server.grid.resume()
    wait_for(progressed, interval=0.005)
    # process never started before generate completed
    assert all(p == "idle" for g, p in seen if g != "complete")


def test_failed_task_fails_dataset(alice: Api, iceprod_server: LocalIceProd) -> None:
    iceprod_server.grid.fail_task("process")
    dataset_id = alice.submit(jobs=1)
    wait_for(lambda: _status(alice, dataset_id) == "errors")
    assert alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {"errors": 1}
    counts = alice.ok("GET", f"/datasets/{dataset_id}/task_counts/status")
    assert counts == {"failed": 1, "complete": 1}
    task = next(t for t in iceprod_server.tasks(dataset_id) if t["name"] == "process")
    logs = alice.ok("GET", f"/datasets/{dataset_id}/tasks/{task['task_id']}/logs", params={"group": "true"})
    assert "simulated failure" in {log["name"]: log for log in logs["logs"]}["stderr"]["data"]


def test_failed_upstream_stalls_dataset(alice: Api, iceprod_server: LocalIceProd) -> None:
    iceprod_server.grid.fail_task("generate")
    dataset_id = alice.submit(jobs=1)
    wait_for(
        lambda: alice.ok("GET", f"/datasets/{dataset_id}/task_counts/status") == {"idle": 1, "failed": 1}
    )
    # several more grid passes: nothing moves, job and dataset stay processing
    import time

    time.sleep(iceprod_server.grid_tick * 10)
    assert alice.ok("GET", f"/datasets/{dataset_id}/task_counts/status") == {"idle": 1, "failed": 1}
    assert alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {"processing": 1}
    assert _status(alice, dataset_id) == "processing"
    # retrying the failed task (IceProd's task_status reset) clears the stall
    iceprod_server.grid.clear_failures()
    request_id = alice.ok(
        "POST",
        "/actions/task_status",
        {"dataset_id": dataset_id, "action": "reset", "initial_status": "failed"},
    )["result"]
    wait_for(lambda: alice.ok("GET", f"/actions/task_status/{request_id}")["status"] == "complete")
    wait_for(lambda: _status(alice, dataset_id) == "complete")


def test_first_n_failures(alice: Api, iceprod_server: LocalIceProd) -> None:
    iceprod_server.grid.fail_task("generate", times=1)
    config = dict(TWO_TASK_CONFIG, tasks=[TWO_TASK_CONFIG["tasks"][0]])
    dataset_id = alice.submit(config, jobs=3)
    wait_for(lambda: _status(alice, dataset_id) == "errors")
    assert alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {"complete": 2, "errors": 1}


def test_suspend_and_resume_through_actions(alice: Api, iceprod_server: LocalIceProd) -> None:
    iceprod_server.grid.pause()
    dataset_id = alice.submit(jobs=3)
    alice.ok("POST", "/actions/materialization", {"dataset_id": dataset_id})
    wait_for(lambda: len(iceprod_server.tasks(dataset_id)) == 6)
    rid = alice.ok("POST", "/actions/dataset_status", {"dataset_id": dataset_id, "action": "suspend"})[
        "result"
    ]
    record = wait_for(
        lambda: (r := alice.ok("GET", f"/actions/dataset_status/{rid}"))["status"] == "complete" and r
    )
    assert record["payload"]["progress"] == 100
    assert _status(alice, dataset_id) == "suspended"
    assert alice.ok("GET", f"/datasets/{dataset_id}/task_counts/status") == {"suspended": 6}
    rid = alice.ok("POST", "/actions/dataset_status", {"dataset_id": dataset_id, "action": "reset"})["result"]
    wait_for(lambda: alice.ok("GET", f"/actions/dataset_status/{rid}")["status"] == "complete")
    assert _status(alice, dataset_id) == "processing"
    assert alice.ok("GET", f"/datasets/{dataset_id}/task_counts/status") == {"idle": 6}
    iceprod_server.grid.resume()
    wait_for(lambda: _status(alice, dataset_id) == "complete")


def test_cron_materializes_only_processing_datasets(alice: Api, iceprod_server: LocalIceProd) -> None:
    dataset_id = alice.submit(jobs=2, extra_submit_fields='{"status": "suspended"}')
    import time

    time.sleep(iceprod_server.materialize_interval * 4)  # type: ignore[operator]
    assert alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {}
    alice.ok("PUT", f"/datasets/{dataset_id}/status", {"status": "processing"})
    wait_for(lambda: _status(alice, dataset_id) == "complete")


def test_create_dataset_helper(iceprod_server: LocalIceProd, alice: Api) -> None:
    dataset_id = iceprod_server.create_dataset(jobs_submitted=2, materialize=True)
    assert len(iceprod_server.jobs(dataset_id)) == 2
    assert alice.ok("GET", f"/config/{dataset_id}")["tasks"][0]["name"] == "generate"
    wait_for(lambda: _status(alice, dataset_id) == "complete")
    assert iceprod_server.dataset_count() == 1
