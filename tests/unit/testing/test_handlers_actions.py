"""Fidelity of the ``/actions/*`` services (reference §5), over plain HTTP."""

from __future__ import annotations

import json
import time

import pytest
from standin_helpers import TWO_TASK_CONFIG, Api, assert_error, wait_for

from airflow_provider_iceprod.testing import LocalIceProd


def _submit_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "config": json.dumps(TWO_TASK_CONFIG),
        "description": "my dataset",
        "jobs_submitted": 3,
    }
    body.update(overrides)
    return body


def _final(api: Api, kind: str, request_id: str) -> dict:
    return dict(
        wait_for(
            lambda: (
                (r := api.ok("GET", f"/actions/{kind}/{request_id}"))["status"] in ("complete", "error") and r
            )
        )
    )


# ------------------------------------------------------------------ submit


def test_submit_lifecycle_and_payload(iceprod_server: LocalIceProd, alice: Api) -> None:
    iceprod_server.grid.pause()
    resp = alice("POST", "/actions/submit", _submit_body(extra_submit_fields='{"priority": 0.7}'))
    assert resp.status_code == 201
    request_id = resp.json()["result"]
    assert len(request_id) == 32
    seen = set()

    def done() -> dict | None:
        record = alice.ok("GET", f"/actions/submit/{request_id}")
        seen.add(record["status"])
        if record["status"] != "complete":
            assert record["payload"]["dataset_id"] == ""  # empty until complete
        return record if record["status"] == "complete" else None

    record = wait_for(done, interval=0.005)
    assert seen <= {"queued", "processing", "complete"} and "complete" in seen
    assert record["id"] == request_id and record["error_message"] == ""
    payload = record["payload"]
    dataset_id = payload.pop("dataset_id")
    filled = json.loads(payload.pop("config"))
    assert filled["version"] == 3.2 and filled["tasks"][0]["trays"][0]["iterations"] == 1  # defaults filled
    assert payload == {
        "description": "my dataset",
        "jobs_submitted": 3,
        "username": "alice",
        "group": "users",
        "extra_submit_fields": '{"priority": 0.7}',
        "type": "submit",
    }
    dataset = alice.ok("GET", f"/datasets/{dataset_id}")
    assert (dataset["tasks_per_job"], dataset["tasks_submitted"], dataset["priority"]) == (2, 6, 0.7)
    assert alice.ok("GET", f"/config/{dataset_id}") == filled
    # submit creates no jobs: materialization does
    assert alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {}
    assert alice.ok("GET", "/actions/submit") == {"queued": 0, "processing": 0, "error": 0, "complete": 1}


def test_submit_is_not_idempotent(iceprod_server: LocalIceProd, alice: Api) -> None:
    first = alice.submit(jobs=1)
    second = alice.submit(jobs=1)
    assert first != second and iceprod_server.dataset_count() == 2


def test_submit_version_is_forced_and_jobs_submitted_may_be_a_string(alice: Api) -> None:
    config = {k: v for k, v in TWO_TASK_CONFIG.items() if k != "version"}
    dataset_id = alice.submit(config, jobs="4")
    assert alice.ok("GET", f"/datasets/{dataset_id}")["jobs_submitted"] == 4
    assert alice.ok("GET", f"/config/{dataset_id}")["version"] == 3.2


def test_submit_start_suspended(alice: Api) -> None:
    dataset_id = alice.submit(jobs=1, extra_submit_fields='{"status": "suspended", "jobs_submitted": 99}')
    dataset = alice.ok("GET", f"/datasets/{dataset_id}")
    assert dataset["status"] == "suspended" and dataset["jobs_submitted"] == 1  # core fields win


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"group": "simprod"}, None),
        ({"group": "filtering"}, "not a member of selected group"),
        ({"username": "bob"}, "cannot submit as a different user"),
        ({"bogus": 1}, "Fields.__init__() got an unexpected keyword argument 'bogus'"),
        ({"jobs_submitted": "three"}, "invalid literal for int() with base 10: 'three'"),
        ({"config": "{not json"}, "config is not valid"),
        (
            {"config": json.dumps({"tasks": [{"name": "t", "trays": []}]})},
            "Validation error in config['tasks'][0]['trays']: [] should be non-empty",
        ),
    ],
)
def test_submit_validation_is_synchronous(
    iceprod_server: LocalIceProd, alice: Api, overrides: dict, reason: str | None
) -> None:
    resp = alice("POST", "/actions/submit", _submit_body(**overrides))
    if reason is None:
        assert resp.status_code == 201
        return
    assert_error(resp, 400, reason)
    assert iceprod_server.action_records() == []


def test_submit_missing_fields(alice: Api) -> None:
    resp = alice("POST", "/actions/submit", {"config": json.dumps(TWO_TASK_CONFIG)})
    assert_error(
        resp,
        400,
        "Fields.__init__() missing 2 required positional arguments: 'description' and 'jobs_submitted'",
    )


def test_submit_by_admin_for_another_user(iceprod_server: LocalIceProd, admin: Api) -> None:
    dataset_id = admin.submit(jobs=1, username="bob")
    assert admin.ok("GET", f"/datasets/{dataset_id}")["username"] == "bob"
    assert Api(iceprod_server, "bob").ok("PUT", f"/datasets/{dataset_id}/priority", {"priority": 0.1}) == {}


def test_system_token_cannot_submit(iceprod_server: LocalIceProd) -> None:
    system = Api(iceprod_server, None)
    system.headers = {"Authorization": f"Bearer {iceprod_server.service_access_token()}"}
    assert_error(system("POST", "/actions/submit", _submit_body()), 400, "not a member of selected group")


def test_submit_run_errors(alice: Api, iceprod_server: LocalIceProd) -> None:
    rid = alice.ok("POST", "/actions/submit", _submit_body(extra_submit_fields='{"status": 5}'))["result"]
    record = _final(alice, "submit", rid)
    assert record["status"] == "error"
    assert record["error_message"] == (
        f'400 Client Error: key "status" should be of type str for url: {iceprod_server.api_url}/datasets'
    )
    assert record["payload"]["dataset_id"] == ""
    assert alice.ok("GET", "/actions/submit")["error"] == 1


def test_actions_auth_and_body_errors(iceprod_server: LocalIceProd, alice: Api) -> None:
    assert_error(
        Api(iceprod_server, None)("POST", "/actions/submit", _submit_body()), 403, "authentication failed"
    )
    assert_error(Api(iceprod_server, "outsider")("GET", "/actions/submit"), 403, "authorization failed")
    assert_error(alice("POST", "/actions/submit", data="{"), 500, "Error in RequestHandler")
    assert_error(alice("GET", "/actions/submit/0123456789abcdef0123456789abcdef"), 404, "Request not found")


def test_records_are_global_and_expire() -> None:
    with LocalIceProd(action_delay=0.01, action_record_ttl=1.0, grid_tick=0.02) as ip:
        api = Api(ip, "alice")
        rid = api.ok("POST", "/actions/submit", _submit_body())["result"]
        assert _final(api, "submit", rid)["status"] == "complete"
        # any action's status route finds any request id, as in IceProd
        assert api.ok("GET", f"/actions/task_status/{rid}")["id"] == rid
        time.sleep(1.1)
        assert_error(api("GET", f"/actions/submit/{rid}"), 404, "Request not found")
        assert api.ok("GET", "/actions/submit") == {"queued": 0, "processing": 0, "error": 0, "complete": 0}
        assert ip.dataset_count() == 1  # the dataset stays


# ------------------------------------------------------------------ materialization


def test_materialization_request_and_dedup(iceprod_server: LocalIceProd, alice: Api) -> None:
    iceprod_server.grid.pause()
    dataset_id = alice.submit(jobs=3)
    first = alice.ok("POST", "/actions/materialization", {"dataset_id": dataset_id, "num": "2"})["result"]
    again = alice.ok("POST", f"/actions/materialization/datasets/{dataset_id}", {})["result"]
    assert again == first  # deduplicated while queued/processing
    record = _final(alice, "materialization", first)
    assert record["status"] == "complete"
    assert record["payload"] == {
        "dataset_id": dataset_id,
        "set_status": "idle",
        "num": 2,
        "type": "materialization",
    }
    assert alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {"processing": 2}
    assert alice.ok("GET", f"/actions/materialization/datasets/{dataset_id}") == {
        "id": first,
        "status": "complete",
    }
    second = alice.ok("POST", "/actions/materialization", {"dataset_id": dataset_id})["result"]
    assert second != first
    _final(alice, "materialization", second)
    assert alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {"processing": 3}  # never beyond


def test_materialization_errors(iceprod_server: LocalIceProd, alice: Api, admin: Api) -> None:
    assert_error(
        alice("POST", "/actions/materialization", {}),
        400,
        "Fields.__init__() missing 1 required positional argument: 'dataset_id'",
    )
    # no ACL check on POST /actions/materialization: the run fails instead
    rid = alice.ok("POST", "/actions/materialization", {"dataset_id": "ffff"})["result"]
    record = _final(alice, "materialization", rid)
    assert record["status"] == "error"
    assert (
        record["error_message"]
        == f"404 Client Error: Dataset not found for url: {iceprod_server.api_url}/datasets/ffff"
    )
    # a dataset without config
    body = {
        "description": "d",
        "jobs_submitted": 1,
        "tasks_submitted": 1,
        "tasks_per_job": 1,
        "group": "users",
    }
    dataset_id = alice.ok("POST", "/datasets", body)["result"]
    record = _final(
        alice,
        "materialization",
        alice.ok("POST", "/actions/materialization", {"dataset_id": dataset_id})["result"],
    )
    assert record["error_message"].startswith("404 Client Error: Config not found")
    # a config whose task count does not match tasks_per_job
    alice.ok("PUT", f"/config/{dataset_id}", TWO_TASK_CONFIG)
    record = _final(
        alice,
        "materialization",
        alice.ok("POST", "/actions/materialization", {"dataset_id": dataset_id})["result"],
    )
    assert record["error_message"] == "config num tasks does not match dataset tasks_per_job"
    assert_error(alice("GET", "/actions/materialization/datasets/abc"), 403, "attr not found")
    assert_error(admin("GET", "/actions/materialization/datasets/abc"), 404, "Request not found")


@pytest.mark.parametrize("iceprod_bugs", [True, False])
def test_truncate_and_the_materialization_cron(iceprod_bugs: bool) -> None:
    """IceProd 3.2.43's cron materializes truncated datasets too (checked by tests/fidelity); with
    ``iceprod_bugs=False`` the stand-in does what truncate means: no new jobs."""
    with LocalIceProd(
        auto_approve_as="alice",
        grid_tick=0.02,
        task_duration=0.5,
        materialize_interval=0.05,
        materialize_batch=1,
        iceprod_bugs=iceprod_bugs,
    ) as server:
        alice = Api(server, "alice")
        dataset_id = alice.submit(jobs=4)
        wait_for(lambda: sum(alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status").values()) >= 1)
        alice.ok("POST", f"/datasets/{dataset_id}/dataset_actions/truncate")
        jobs_at_truncate = sum(alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status").values())
        wait_for(lambda: alice.ok("GET", f"/datasets/{dataset_id}")["status"] != "processing", timeout=20)
        jobs = sum(alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status").values())
        assert alice.ok("GET", f"/datasets/{dataset_id}")["status"] == "complete"
        if iceprod_bugs:
            assert jobs == 4
        else:
            assert jobs == jobs_at_truncate < 4


def test_truncating_a_dataset_whose_jobs_are_all_done_completes_it() -> None:
    """IceProd's ``dataset_completion`` looks at every processing dataset on each pass, so a truncate
    alone is enough for it to end a dataset whose materialized jobs are all complete."""
    with LocalIceProd(
        auto_approve_as="alice", grid_tick=0.02, task_duration=0.02, materialize_interval=None
    ) as server:
        alice = Api(server, "alice")
        dataset_id = alice.submit(jobs=3)
        rid = alice.ok("POST", "/actions/materialization", {"dataset_id": dataset_id, "num": 1})["result"]
        assert _final(alice, "materialization", rid)["status"] == "complete"
        wait_for(lambda: alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {"complete": 1})
        time.sleep(0.2)  # several grid passes: nothing is left to change the dataset
        assert alice.ok("GET", f"/datasets/{dataset_id}")["status"] == "processing"
        alice.ok("POST", f"/datasets/{dataset_id}/dataset_actions/truncate")
        wait_for(lambda: alice.ok("GET", f"/datasets/{dataset_id}")["status"] == "complete", timeout=5)


def test_explicit_materialization_ignores_truncated(iceprod_server: LocalIceProd, alice: Api) -> None:
    iceprod_server.grid.pause()
    body = {
        "description": "d",
        "jobs_submitted": 2,
        "tasks_submitted": 4,
        "tasks_per_job": 2,
        "group": "users",
    }
    dataset_id = alice.ok("POST", "/datasets", body)["result"]
    alice.ok("PUT", f"/config/{dataset_id}", TWO_TASK_CONFIG)
    alice.ok("POST", f"/datasets/{dataset_id}/dataset_actions/truncate")
    rid = alice.ok("POST", "/actions/materialization", {"dataset_id": dataset_id})["result"]
    assert _final(alice, "materialization", rid)["status"] == "complete"
    assert sum(alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status").values()) == 2


# ------------------------------------------------------------------ dataset_status / job_status / task_status


def test_status_actions_validation(iceprod_server: LocalIceProd, alice: Api, admin: Api) -> None:
    dataset_id = alice.submit(jobs=1)
    bob = Api(iceprod_server, "bob")
    for kind in ("dataset_status", "job_status", "task_status"):
        assert_error(
            alice("POST", f"/actions/{kind}", {"dataset_id": dataset_id, "action": "resume"}),
            400,
            "invalid action",
        )
        assert_error(
            bob("POST", f"/actions/{kind}", {"dataset_id": dataset_id, "action": "suspend"}),
            403,
            "auth failed",
        )
        assert_error(
            alice("POST", f"/actions/{kind}", {"dataset_id": "ffff", "action": "suspend"}), 403, "auth failed"
        )
        assert_error(
            alice("POST", f"/actions/{kind}", {"action": "suspend"}),
            400,
            "Fields.__init__() missing 1 required positional argument: 'dataset_id'",
        )
    assert_error(
        alice(
            "POST",
            "/actions/task_status",
            {"dataset_id": dataset_id, "action": "reset", "initial_status": "broken"},
        ),
        400,
        "invalid initial_status",
    )
    assert_error(
        alice(
            "POST",
            "/actions/task_status",
            {"dataset_id": dataset_id, "action": "reset", "task_ids": ["a"], "job_ids": ["b"]},
        ),
        400,
        "cannot define both task_ids and job_ids",
    )
    assert_error(
        alice(
            "POST",
            "/actions/job_status",
            {"dataset_id": dataset_id, "action": "reset", "initial_status": "errors", "job_ids": ["b"]},
        ),
        400,
        "cannot define both initial_status and job_ids",
    )
    # admins skip the ACL: an unknown dataset fails at run time
    rid = admin.ok("POST", "/actions/dataset_status", {"dataset_id": "ffff", "action": "suspend"})["result"]
    record = _final(admin, "dataset_status", rid)
    assert record["status"] == "error" and record["error_message"].startswith(
        "404 Client Error: Dataset not found"
    )


def test_task_status_reset_of_failed_tasks_on_an_errors_dataset(
    iceprod_server: LocalIceProd, alice: Api
) -> None:
    iceprod_server.grid.fail_task("process")
    dataset_id = alice.submit(jobs=2)
    wait_for(lambda: alice.ok("GET", f"/datasets/{dataset_id}")["status"] == "errors")
    iceprod_server.grid.clear_failures()
    iceprod_server.grid.pause()
    rid = alice.ok(
        "POST",
        "/actions/task_status",
        {"dataset_id": dataset_id, "action": "reset", "initial_status": "failed"},
    )["result"]
    record = _final(alice, "task_status", rid)
    assert record["status"] == "complete" and record["payload"]["progress"] == 100
    assert alice.ok("GET", f"/datasets/{dataset_id}")["status"] == "processing"
    assert alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {"processing": 2}
    assert alice.ok("GET", f"/datasets/{dataset_id}/task_counts/name_status") == {
        "generate": {"complete": 2},
        "process": {"idle": 2},
    }
    iceprod_server.grid.resume()
    wait_for(lambda: alice.ok("GET", f"/datasets/{dataset_id}")["status"] == "complete")


def test_task_status_suspend_by_task_ids_touches_only_tasks(iceprod_server: LocalIceProd, alice: Api) -> None:
    iceprod_server.grid.pause()
    dataset_id = iceprod_server.create_dataset(TWO_TASK_CONFIG, jobs_submitted=2, materialize=True)
    task_ids = [t["task_id"] for t in iceprod_server.tasks(dataset_id) if t["name"] == "process"]
    rid = alice.ok(
        "POST", "/actions/task_status", {"dataset_id": dataset_id, "action": "suspend", "task_ids": task_ids}
    )["result"]
    assert _final(alice, "task_status", rid)["status"] == "complete"
    assert alice.ok("GET", f"/datasets/{dataset_id}/task_counts/name_status") == {
        "generate": {"idle": 2},
        "process": {"suspended": 2},
    }
    assert alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {"processing": 2}
    assert alice.ok("GET", f"/datasets/{dataset_id}")["status"] == "processing"


def test_job_status_hard_reset_reruns_complete_jobs(iceprod_server: LocalIceProd, alice: Api) -> None:
    dataset_id = alice.submit(jobs=2)
    wait_for(lambda: alice.ok("GET", f"/datasets/{dataset_id}")["status"] == "complete")
    job_ids = [j["job_id"] for j in iceprod_server.jobs(dataset_id)][:1]
    iceprod_server.grid.pause()
    rid = alice.ok(
        "POST", "/actions/job_status", {"dataset_id": dataset_id, "action": "hard_reset", "job_ids": job_ids}
    )["result"]
    assert _final(alice, "job_status", rid)["status"] == "complete"
    # a complete dataset stays complete (complete -> processing is no transition), its job and tasks re-run
    assert alice.ok("GET", f"/datasets/{dataset_id}")["status"] == "complete"
    assert alice.ok("GET", f"/datasets/{dataset_id}/job_counts/status") == {"processing": 1, "complete": 1}
    assert alice.ok("GET", f"/datasets/{dataset_id}/task_counts/status") == {"idle": 2, "complete": 2}


def test_dataset_status_hard_reset_of_errors_dataset(iceprod_server: LocalIceProd, alice: Api) -> None:
    iceprod_server.grid.fail_task("process", times=1)
    dataset_id = alice.submit(jobs=2)
    wait_for(lambda: alice.ok("GET", f"/datasets/{dataset_id}")["status"] == "errors")
    rid = alice.ok("POST", "/actions/dataset_status", {"dataset_id": dataset_id, "action": "hard_reset"})[
        "result"
    ]
    assert _final(alice, "dataset_status", rid)["status"] == "complete"
    wait_for(lambda: alice.ok("GET", f"/datasets/{dataset_id}")["status"] == "complete")
    tasks = iceprod_server.tasks(dataset_id)
    assert all(t["status"] == "complete" and t["failures"] == 0 for t in tasks)
