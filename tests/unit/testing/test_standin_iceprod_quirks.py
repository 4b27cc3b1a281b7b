"""The stand-in on IceProd 3.2.43's quirks (docs/iceprod-quirks.md), each also a scenario of tests/fidelity."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from standin_helpers import Api, wait_for

from airflow_provider_iceprod.testing import LocalIceProd

ONE_TASK = {"version": 3.2, "tasks": [{"name": "a", "trays": [{"modules": [{"src": "a.py"}]}]}]}


def _final(api: Api, kind: str, request_id: str) -> dict[str, Any]:
    return dict(
        wait_for(
            lambda: (
                (r := api.ok("GET", f"/actions/{kind}/{request_id}"))["status"] in ("complete", "error") and r
            )
        )
    )


def _settled(api: Api, dataset_id: str) -> dict[str, Any]:
    return dict(
        wait_for(lambda: (d := api.ok("GET", f"/datasets/{dataset_id}"))["status"] != "processing" and d)
    )


def _jobs(api: Api, dataset_id: str) -> dict[str, int]:
    return dict(api.ok("GET", f"/datasets/{dataset_id}/job_counts/status"))


# ------------------------------------------------------------------ 1. hard_reset of a complete dataset


def test_1_hard_reset_action_leaves_complete_dataset_with_processing_jobs(
    iceprod_server: LocalIceProd, alice: Api
) -> None:
    dataset_id = alice.submit(ONE_TASK, jobs=1)
    _settled(alice, dataset_id)
    rid = alice.ok("POST", "/actions/dataset_status", {"dataset_id": dataset_id, "action": "hard_reset"})[
        "result"
    ]
    assert _final(alice, "dataset_status", rid)["status"] == "complete"
    # job_completion skips datasets that are not processing: the jobs stay processing for good
    wait_for(lambda: alice.ok("GET", f"/datasets/{dataset_id}/task_counts/status") == {"complete": 1})
    assert alice.ok("GET", f"/datasets/{dataset_id}")["status"] == "complete"
    assert _jobs(alice, dataset_id) == {"processing": 1}


# ------------------------------------------------------------------ 5. system tokens


def test_5_system_token_owner_is_iceprod_system(iceprod_server: LocalIceProd) -> None:
    system = Api(iceprod_server, None)
    system.headers = {"Authorization": f"Bearer {_system_token(iceprod_server)}"}
    body = {
        "description": "s",
        "jobs_submitted": 1,
        "tasks_submitted": 1,
        "tasks_per_job": 1,
        "group": "users",
    }
    dataset_id = system.ok("POST", "/datasets", body)["result"]
    assert system.ok("GET", f"/datasets/{dataset_id}")["username"] == "iceprod-system"
    resp = system("PUT", f"/datasets/{dataset_id}/jobs_submitted", {"jobs_submitted": 2})
    assert resp.status_code == 403
    resp = system(
        "POST", "/actions/submit", {"config": json.dumps(ONE_TASK), "description": "d", "jobs_submitted": 1}
    )
    assert (resp.status_code, resp.json()["error"]) == (400, "not a member of selected group")


def _system_token(server: LocalIceProd) -> str:
    import requests

    resp = requests.post(
        server.idp.token_endpoint,
        data={"grant_type": "client_credentials"},
        auth=("iceprod-service", server.idp.service_client_secret),
        timeout=10,
    )
    resp.raise_for_status()
    return str(resp.json()["access_token"])


# ------------------------------------------------------------------ 6. depends and edit_config


def test_6_raw_task_id_depends_run_to_complete(iceprod_server: LocalIceProd, alice: Api) -> None:
    upstream = alice.submit(ONE_TASK, jobs=1)
    _settled(alice, upstream)
    (task_id,) = alice.ok("GET", f"/datasets/{upstream}/tasks", params={"keys": "task_id"})
    config = {
        "version": 3.2,
        "tasks": [{"name": "x", "depends": [task_id], "trays": [{"modules": [{"src": "x"}]}]}],
    }
    dataset_id = alice.submit(config, jobs=2)
    assert _settled(alice, dataset_id)["status"] == "complete"
    tasks = alice.ok("GET", f"/datasets/{dataset_id}/tasks", params={"keys": "depends"})
    assert [t["depends"] for t in tasks.values()] == [[task_id], [task_id]]


@pytest.mark.parametrize("jobs,status", [(1, "complete"), (3, "processing")])
def test_6_dataset_task_depends_never_resolve(
    iceprod_server: LocalIceProd, alice: Api, jobs: int, status: str
) -> None:
    upstream = alice.submit(ONE_TASK, jobs=1)
    _settled(alice, upstream)
    config = {
        "version": 3.2,
        "tasks": [
            {"name": "x", "trays": [{"modules": [{"src": "x"}]}]},
            {"name": "y", "depends": [f"{upstream}:a"], "trays": [{"modules": [{"src": "y"}]}]},
        ],
    }
    dataset_id = alice.submit(config, jobs=jobs)
    # the first job gets task x only; with one job that completes the dataset, else it never moves on
    wait_for(lambda: alice.ok("GET", f"/datasets/{dataset_id}/task_counts/status") == {"complete": 1})
    if status == "complete":
        _settled(alice, dataset_id)
    assert alice.ok("GET", f"/datasets/{dataset_id}")["status"] == status
    assert alice.ok("GET", f"/datasets/{dataset_id}/task_counts/name_status") == {"x": {"complete": 1}}


def test_6_edit_config_action(iceprod_server: LocalIceProd, alice: Api) -> None:
    dataset_id = alice.submit(ONE_TASK, jobs=1)
    _settled(alice, dataset_id)
    edited = json.loads(json.dumps(ONE_TASK))
    edited["tasks"][0]["requirements"] = {"memory": 3}
    body = {"dataset_id": dataset_id, "config": json.dumps(edited), "description": "edited"}
    assert (
        _final(alice, "edit_config", alice.ok("POST", "/actions/edit_config", body)["result"])["status"]
        == "complete"
    )
    assert alice.ok("GET", f"/config/{dataset_id}")["tasks"][0]["requirements"]["memory"] == 3
    assert alice.ok("GET", f"/datasets/{dataset_id}")["description"] == "edited"
    # without a version IceProd fills with its 3.1 schema (no depends default): the run fails on 'depends'
    del edited["version"]
    body = {"dataset_id": dataset_id, "config": json.dumps(edited)}
    record = _final(alice, "edit_config", alice.ok("POST", "/actions/edit_config", body)["result"])
    assert (record["status"], record["error_message"]) == ("error", "'depends'")
    renamed = json.loads(json.dumps(ONE_TASK))
    renamed["tasks"][0]["name"] = "b"
    body = {"dataset_id": dataset_id, "config": json.dumps(renamed)}
    record = _final(alice, "edit_config", alice.ok("POST", "/actions/edit_config", body)["result"])
    assert record["error_message"] == "cannot edit task names - create a new dataset"


# ------------------------------------------------------------------ 7. unknown groups


def test_7_unknown_read_group_retries_and_leaves_orphans(alice: Api) -> None:
    with LocalIceProd(auto_approve_as="alice", submit_retry_scale=0.01) as server:
        api = Api(server, "alice")
        body = {
            "config": json.dumps(ONE_TASK),
            "description": "bad group",
            "jobs_submitted": 1,
            "extra_submit_fields": json.dumps({"auth_groups_read": ["IceCube"]}),
        }
        rid = api.ok("POST", "/actions/submit", body)["result"]
        record = _final(api, "submit", rid)
        assert record["status"] == "error"
        assert "Max retries exceeded with url: /datasets" in record["error_message"]
        assert len(server.datasets()) == 11  # one try and ten retries, each inserting a dataset
        assert api.ok("GET", "/datasets") == {}  # none visible to its owner


# ------------------------------------------------------------------ 8. PUT /config stores the raw body


def test_8_raw_config_breaks_edit_config(iceprod_server: LocalIceProd, alice: Api) -> None:
    dataset_id = alice.submit(ONE_TASK, jobs=1)
    _settled(alice, dataset_id)
    alice.ok("PUT", f"/config/{dataset_id}", ONE_TASK)
    assert "depends" not in alice.ok("GET", f"/config/{dataset_id}")["tasks"][0]
    body = {"dataset_id": dataset_id, "config": json.dumps(ONE_TASK)}
    record = _final(alice, "edit_config", alice.ok("POST", "/actions/edit_config", body)["result"])
    assert record["error_message"] == "'depends'"


# ------------------------------------------------------------------ 2. retry_failed and 3. add_jobs


TWO = {
    "version": 3.2,
    "tasks": [
        {"name": "a", "trays": [{"modules": [{"src": "a.py"}]}]},
        {"name": "b", "depends": ["a"], "trays": [{"modules": [{"src": "b.py"}]}]},
    ],
}


def test_2_task_reset_misses_failures_cleanup_suspended(iceprod_server: LocalIceProd, alice: Api) -> None:
    iceprod_server.grid.fail_task("b", times=1)
    # always_active keeps the dataset processing, so dataset_cleanup suspends the failed task
    dataset_id = alice.submit(TWO, jobs=1, extra_submit_fields=json.dumps({"always_active": True}))
    names = f"/datasets/{dataset_id}/task_counts/name_status"
    wait_for(lambda: alice.ok("GET", names).get("b") == {"suspended": 1})
    body = {"dataset_id": dataset_id, "action": "reset", "initial_status": "failed"}
    assert (
        _final(alice, "task_status", alice.ok("POST", "/actions/task_status", body)["result"])["status"]
        == "complete"
    )
    assert _jobs(alice, dataset_id) == {"errors": 1}
    body = {"dataset_id": dataset_id, "action": "reset"}
    assert _final(alice, "dataset_status", alice.ok("POST", "/actions/dataset_status", body)["result"])
    wait_for(lambda: _jobs(alice, dataset_id) == {"complete": 1})


def test_3_add_jobs_on_complete_dataset_creates_nothing(iceprod_server: LocalIceProd, alice: Api) -> None:
    dataset_id = alice.submit(ONE_TASK, jobs=1)
    _settled(alice, dataset_id)
    alice.ok("PUT", f"/datasets/{dataset_id}/jobs_submitted", {"jobs_submitted": 3})
    time.sleep(10 * iceprod_server.grid_tick + 3 * (iceprod_server.materialize_interval or 0))
    assert _jobs(alice, dataset_id) == {"complete": 1}
    assert alice.ok("GET", f"/datasets/{dataset_id}")["status"] == "complete"


# ------------------------------------------------------------------ 10. a dataset with jobs_submitted=0


def test_10_empty_dataset_is_suspended_and_jobs_wait_for_a_resume(
    iceprod_server: LocalIceProd, alice: Api
) -> None:
    dataset_id = alice.submit(ONE_TASK, jobs=0)
    settled = _settled(alice, dataset_id)
    # dataset_completion: every job (none) is made and none is processing, so: suspended
    assert (settled["status"], settled["jobs_submitted"], settled["tasks_submitted"]) == ("suspended", 0, 0)
    assert _jobs(alice, dataset_id) == {}
    alice.ok("PUT", f"/datasets/{dataset_id}/jobs_submitted", {"jobs_submitted": 2})
    time.sleep(10 * iceprod_server.grid_tick + 3 * (iceprod_server.materialize_interval or 0))
    assert _jobs(alice, dataset_id) == {}  # materialization only looks at processing datasets
    rid = alice.ok("POST", "/actions/dataset_status", {"dataset_id": dataset_id, "action": "reset"})["result"]
    assert _final(alice, "dataset_status", rid)["status"] == "complete"
    wait_for(lambda: _jobs(alice, dataset_id) == {"complete": 2})
    assert _settled(alice, dataset_id)["status"] == "complete"
