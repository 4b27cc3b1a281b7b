"""The same scenarios against the stand-in and against IceProd 3.2.43; any difference fails.

Numbers in the names are the behaviours of docs/iceprod-quirks.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from scenarios import Record, config, submit, task
from sides import Side

Scenario = Callable[[Side, Record], None]


def compare(sides: tuple[Side, Side], scenario: Scenario) -> list[tuple[str, Any]]:
    records = []
    for side in sides:
        rec = Record()
        scenario(side, rec)
        records.append(rec.steps)
    standin, real = records
    for (label, got), (label2, want) in zip(standin, real, strict=True):
        assert label == label2
        assert got == want, (
            f"step {label!r}: stand-in differs from IceProd 3.2.43\n"
            f"stand-in: {json.dumps(got, sort_keys=True)[:3000]}\n"
            f"iceprod:  {json.dumps(want, sort_keys=True)[:3000]}"
        )
    return real


def _dataset_id(record: dict[str, Any]) -> str:
    return str(record["payload"]["dataset_id"])


# ---------------------------------------------------------------- routes the hook uses


def test_submit_and_read_routes(sides: tuple[Side, Side]) -> None:
    def scenario(side: Side, rec: Record) -> None:
        done = rec.add("submit", submit(side, config(task("gen"), task("filt", depends=["gen"])), 2))
        ds = _dataset_id(done)
        rec.state(side)
        rec.add("dataset", side.api("GET", f"/datasets/{ds}"))
        rec.add("config", side.api("GET", f"/config/{ds}"))
        rec.add("summaries", side.api("GET", "/dataset_summaries/status"))
        rec.add("jobs", side.api("GET", f"/datasets/{ds}/jobs", params={"keys": "job_index|status"}))
        rec.add("job_summaries", side.api("GET", f"/datasets/{ds}/job_summaries/status"))
        rec.add("job_counts", side.api("GET", f"/datasets/{ds}/job_counts/status"))
        status, tasks = side.api(
            "GET", f"/datasets/{ds}/tasks", params={"keys": "task_id|name|status|job_index"}
        )
        rec.add("tasks", (status, sorted(tasks.values(), key=lambda t: (t["job_index"], t["name"]))))
        rec.add("task_counts", side.api("GET", f"/datasets/{ds}/task_counts/status"))
        rec.add("task_name_status", side.api("GET", f"/datasets/{ds}/task_counts/name_status"))
        rec.add("bad dataset", side.api("GET", "/datasets/0123456789abcdef0123456789abcdef"))
        rec.add("bad status", side.api("GET", "/datasets", params={"status": "bogus"}))

    compare(sides, scenario)


def test_dataset_puts(sides: tuple[Side, Side]) -> None:
    def scenario(side: Side, rec: Record) -> None:
        ds = _dataset_id(submit(side, config(task("a")), 1))
        rec.state(side)
        rec.add("priority", side.api("PUT", f"/datasets/{ds}/priority", {"priority": 0.7}))
        rec.add("bad priority", side.api("PUT", f"/datasets/{ds}/priority", {"priority": "x"}))
        rec.add("description", side.api("PUT", f"/datasets/{ds}/description", {"description": "new"}))
        rec.add("status", side.api("PUT", f"/datasets/{ds}/status", {"status": "suspended"}))
        rec.add("bad status", side.api("PUT", f"/datasets/{ds}/status", {"status": "nope"}))
        rec.add("after", side.api("GET", f"/datasets/{ds}"))

    compare(sides, scenario)


def test_job_and_task_routes(sides: tuple[Side, Side]) -> None:
    def scenario(side: Side, rec: Record) -> None:
        side.fail_task("b")
        ds = _dataset_id(submit(side, config(task("a"), task("b", depends=["a"])), 2))
        rec.state(side, "errors")
        _, jobs = side.api("GET", f"/datasets/{ds}/jobs", params={"keys": "job_id|job_index"})
        job_ids = [j["job_id"] for j in sorted(jobs.values(), key=lambda j: j["job_index"])]
        _, tasks = side.api("GET", f"/datasets/{ds}/tasks", params={"keys": "task_id|name|job_index"})
        tasks_sorted = sorted(tasks.values(), key=lambda t: (t["job_index"], t["name"]))
        task_ids = [t["task_id"] for t in tasks_sorted]
        rec.add("job", side.api("GET", f"/datasets/{ds}/jobs/{job_ids[0]}"))
        rec.add("task keys", sorted(side.api("GET", f"/datasets/{ds}/tasks/{task_ids[1]}")[1]))
        rec.add("task_stats", side.api("GET", f"/datasets/{ds}/task_stats")[0])
        rec.add("task summaries", side.api("GET", f"/datasets/{ds}/task_summaries/status")[1].keys())
        rec.add(
            "job bulk_suspend",
            side.api("POST", f"/datasets/{ds}/job_actions/bulk_suspend", {"jobs": job_ids[:1]}),
        )
        rec.add(
            "task bulk_suspend",
            side.api("POST", f"/datasets/{ds}/task_actions/bulk_suspend", {"tasks": task_ids[:1]}),
        )
        rec.add(
            "task bulk_status",
            side.api("POST", f"/datasets/{ds}/task_actions/bulk_status/idle", {"tasks": task_ids[2:3]}),
        )
        rec.add(
            "bad bulk_status",
            side.api("POST", f"/datasets/{ds}/task_actions/bulk_status/nope", {"tasks": task_ids}),
        )
        rec.add(
            "job bulk_status",
            side.api("POST", f"/datasets/{ds}/job_actions/bulk_status/suspended", {"jobs": job_ids}),
        )
        rec.add(
            "requirements",
            side.api("PATCH", f"/datasets/{ds}/task_actions/bulk_requirements/b", {"memory": 4.0}),
        )
        rec.add(
            "bad requirements",
            side.api("PATCH", f"/datasets/{ds}/task_actions/bulk_requirements/b", {"nope": 1}),
        )
        rec.add(
            "task status put",
            side.api("PUT", f"/datasets/{ds}/tasks/{task_ids[0]}/status", {"status": "waiting"}),
        )
        rec.add(
            "job status put",
            side.api("PUT", f"/datasets/{ds}/jobs/{job_ids[0]}/status", {"status": "complete"}),
        )
        rec.state(side, "after routes")
        side.fail_task("b", times=0)
        rec.add(
            "job_status",
            side.action_done("job_status", {"dataset_id": ds, "action": "reset", "job_ids": job_ids}),
        )
        body = {"dataset_id": ds, "action": "hard_reset", "task_ids": task_ids[1:2]}
        rec.add("task_status", side.action_done("task_status", body))
        rec.add("bad action", side.action_done("job_status", {"dataset_id": ds, "action": "resume"}))
        rec.state(side, "after actions")
        rec.add("job bulk_hard_reset", side.api("POST", f"/datasets/{ds}/job_actions/bulk_hard_reset", {}))
        rec.add("task bulk_reset", side.api("POST", f"/datasets/{ds}/task_actions/bulk_reset", {}))
        rec.add("materialization", side.action_done("materialization", {"dataset_id": ds}))
        rec.state(side, "after bulk")

    compare(sides, scenario)


def test_add_jobs_on_processing_dataset(sides: tuple[Side, Side]) -> None:
    def scenario(side: Side, rec: Record) -> None:
        ds = _dataset_id(
            submit(side, config(task("a")), 2, extra_submit_fields=json.dumps({"always_active": True}))
        )
        rec.state(side, "before")
        rec.add("put", side.api("PUT", f"/datasets/{ds}/jobs_submitted", {"jobs_submitted": 3}))
        rec.add("smaller", side.api("PUT", f"/datasets/{ds}/jobs_submitted", {"jobs_submitted": 1}))
        rec.state(side, "after")

    real = dict(compare(sides, scenario))
    assert real["after"][0]["jobs"] == {"complete": 3}


def test_zero_job_submit_then_add_jobs(sides: tuple[Side, Side]) -> None:
    """A submit with ``jobs_submitted=0`` is accepted; materialization makes no job, and
    ``dataset_completion`` suspends the empty dataset (no job is processing). Jobs added later stay
    unmade until the dataset is resumed (the dataset_status reset); then they run to the end."""

    def scenario(side: Side, rec: Record) -> None:
        done = rec.add("submit", submit(side, config(task("a")), 0))
        ds = _dataset_id(done)
        code, doc = side.api("GET", f"/datasets/{ds}")
        # its status right after the submit depends on when dataset_completion runs: read it settled
        rec.add("dataset", (code, {k: v for k, v in doc.items() if k != "status"}))
        rec.add("materialize", side.action_done("materialization", {"dataset_id": ds}))
        rec.state(side, "settled")
        rec.add("put", side.api("PUT", f"/datasets/{ds}/jobs_submitted", {"jobs_submitted": 2}))
        rec.state(side, "after put")
        rec.add("resume", side.action_done("dataset_status", {"dataset_id": ds, "action": "reset"}))
        rec.state(side, "after resume")

    real = dict(compare(sides, scenario))
    assert real["submit"]["status"] == "complete"
    assert real["dataset"][1]["jobs_submitted"] == 0
    assert real["settled"][0]["status"] == "suspended" and real["settled"][0]["jobs"] == {}
    assert real["after put"][0]["jobs_submitted"] == 2 and real["after put"][0]["jobs"] == {}
    assert real["after resume"][0]["jobs"] == {"complete": 2}


def test_zero_job_always_active_dataset(sides: tuple[Side, Side]) -> None:
    """With ``always_active``, the empty dataset stays processing, and added jobs run at once."""

    def scenario(side: Side, rec: Record) -> None:
        extra = json.dumps({"always_active": True})
        ds = _dataset_id(submit(side, config(task("a")), 0, extra_submit_fields=extra))
        rec.state(side, "settled")
        rec.add("put", side.api("PUT", f"/datasets/{ds}/jobs_submitted", {"jobs_submitted": 2}))
        rec.state(side, "after put")

    real = dict(compare(sides, scenario))
    assert real["settled"][0]["status"] == "processing" and real["settled"][0]["jobs"] == {}
    assert real["after put"][0]["jobs"] == {"complete": 2}


# ---------------------------------------------------------------- 1. hard_reset of a complete dataset


def test_1_hard_reset_action_of_complete_dataset(sides: tuple[Side, Side]) -> None:
    def scenario(side: Side, rec: Record) -> None:
        ds = _dataset_id(submit(side, config(task("a")), 1))
        rec.state(side, "complete")
        rec.add("action", side.action_done("dataset_status", {"dataset_id": ds, "action": "hard_reset"}))
        rec.state(side, "after action")

    real = compare(sides, scenario)
    after = dict(real)["after action"][0]
    assert after["status"] == "complete" and after["jobs"] == {"processing": 1}


def test_1_hard_reset_route_of_complete_dataset(sides: tuple[Side, Side]) -> None:
    def scenario(side: Side, rec: Record) -> None:
        ds = _dataset_id(submit(side, config(task("a")), 1))
        rec.state(side, "complete")
        rec.add("route", side.api("POST", f"/datasets/{ds}/dataset_actions/hard_reset"))
        rec.state(side, "after route")

    real = compare(sides, scenario)
    assert dict(real)["after route"][0]["status"] == "complete"


# ---------------------------------------------------------------- 2. retry_failed


def test_2_retry_failed_misses_suspended_failures(sides: tuple[Side, Side]) -> None:
    """While its dataset is processing, dataset_cleanup suspends the failed tasks of a job in errors,
    so a task reset with ``initial_status=failed`` finds nothing; the dataset reset recovers it.
    (``always_active`` keeps the dataset processing whatever the timing of the last job.)"""

    def scenario(side: Side, rec: Record) -> None:
        side.fail_task("b", times=1)
        extra = json.dumps({"always_active": True})
        ds = _dataset_id(
            submit(side, config(task("a"), task("b", depends=["a"])), 1, extra_submit_fields=extra)
        )
        rec.state(side, "job in errors")
        body = {"dataset_id": ds, "action": "reset", "initial_status": "failed"}
        rec.add("task reset", side.action_done("task_status", body))
        rec.state(side, "after task reset")
        rec.add("dataset reset", side.action_done("dataset_status", {"dataset_id": ds, "action": "reset"}))
        rec.state(side, "after dataset reset")

    real = dict(compare(sides, scenario))
    assert real["job in errors"][0]["tasks"]["b"] == {"suspended": 1}
    assert real["after task reset"][0]["jobs"] == {"errors": 1}
    assert real["after dataset reset"][0]["jobs"] == {"complete": 1}


def test_2_errors_dataset_task_reset(sides: tuple[Side, Side]) -> None:
    def scenario(side: Side, rec: Record) -> None:
        side.fail_task("b", times=1)
        ds = _dataset_id(submit(side, config(task("a"), task("b", depends=["a"])), 1))
        rec.state(side, "errors")
        body = {"dataset_id": ds, "action": "reset", "initial_status": "failed"}
        rec.add("task reset", side.action_done("task_status", body))
        rec.state(side, "after task reset")

    real = dict(compare(sides, scenario))
    assert real["errors"][0]["status"] == "errors"


# ---------------------------------------------------------------- 3. add_jobs on complete


def test_3_add_jobs_on_complete_dataset(sides: tuple[Side, Side]) -> None:
    def scenario(side: Side, rec: Record) -> None:
        ds = _dataset_id(submit(side, config(task("a")), 1))
        rec.state(side, "complete")
        rec.add("put", side.api("PUT", f"/datasets/{ds}/jobs_submitted", {"jobs_submitted": 3}))
        rec.state(side, "after put")

    real = dict(compare(sides, scenario))
    assert real["after put"][0]["jobs"] == {"complete": 1}


# ---------------------------------------------------------------- 4. truncate


def test_4_truncate_does_not_stop_materialization(sides: tuple[Side, Side]) -> None:
    def scenario(side: Side, rec: Record) -> None:
        ds = _dataset_id(submit(side, config(task("a")), 6))
        # a truncate before the first jobs exist lets dataset_completion suspend the empty dataset (on
        # IceProd too, when that cron runs first): truncate while materialization is under way
        side.first_jobs(ds)
        rec.add("truncate", side.api("POST", f"/datasets/{ds}/dataset_actions/truncate"))
        rec.state(side, "after truncate")

    real = dict(compare(sides, scenario))
    assert real["after truncate"][0]["jobs"] == {"complete": 6}


# ---------------------------------------------------------------- 5. service accounts


def test_5_system_token_owner_and_limits(sides: tuple[Side, Side]) -> None:
    def scenario(side: Side, rec: Record) -> None:
        rec.add("submit no group", submit(side, config(task("a")), 1, who="system"))
        body = {
            "description": "sys",
            "jobs_submitted": 1,
            "tasks_submitted": 1,
            "tasks_per_job": 1,
            "group": "users",
        }
        _, created = rec.add("post dataset", side.api("POST", "/datasets", body, who="system"))
        ds = created["result"]
        rec.add("owner", side.api("GET", f"/datasets/{ds}", who="system")[1]["username"])
        rec.add(
            "jobs_submitted",
            side.api("PUT", f"/datasets/{ds}/jobs_submitted", {"jobs_submitted": 2}, who="system"),
        )

    compare(sides, scenario)


# ---------------------------------------------------------------- 6. config checks


@pytest.mark.parametrize(
    "name,cfg,jobs",
    [
        ("duplicate task names", config(task("a"), task("a")), 1),
        ("jobs_submitted=0", config(task("a")), 0),
        ("unknown depends", config(task("a", depends=["zzz"])), 1),
        ("no tasks", config(), 1),
        ("bad version", config(task("a"), version=2.0), 1),
        ("empty trays", config({"name": "a", "trays": []}), 1),
        ("permanent data without remote", config(task("a", data=[{"type": "permanent"}])), 1),
        (
            "temp data with remote",
            config(task("a", data=[{"type": "job_temp", "remote": "gsiftp://x/y"}])),
            1,
        ),
        ("task_files without scopes", config(task("a", task_files=True)), 1),
        ("unknown task key", config(task("a", bogus=1)), 1),
        ("unknown module key", config({"name": "a", "trays": [{"modules": [{"src": "a", "x": 1}]}]}), 1),
        ("depends on itself", config(task("a", depends=["a"])), 1),
        ("depends by index", config(task("a"), task("b", depends=[0])), 1),
        ("negative jobs", config(task("a")), -1),
    ],
)
def test_6_config_checks(sides: tuple[Side, Side], name: str, cfg: dict[str, Any], jobs: int) -> None:
    def scenario(side: Side, rec: Record) -> None:
        rec.add("submit", submit(side, cfg, jobs))
        rec.state(side)

    compare(sides, scenario)


def test_6_dataset_task_depends(sides: tuple[Side, Side]) -> None:
    def scenario(side: Side, rec: Record) -> None:
        first = _dataset_id(submit(side, config(task("a")), 1, description="upstream"))
        rec.state(side, "upstream")
        cfg = config(task("x"), task("y", depends=[f"{first}:a"]))
        rec.add("submit", submit(side, cfg, 1, description="one job"))
        rec.add("submit2", submit(side, cfg, 3, description="three jobs"))
        rec.state(side, "after")

    real = dict(compare(sides, scenario))
    assert [d["status"] for d in real["after"]] == ["complete", "complete", "processing"]


def test_6_raw_task_id_depends(sides: tuple[Side, Side]) -> None:
    def scenario(side: Side, rec: Record) -> None:
        first = _dataset_id(submit(side, config(task("a")), 1, description="upstream"))
        rec.state(side, "upstream")
        _, tasks = side.api("GET", f"/datasets/{first}/tasks", params={"keys": "task_id"})
        (task_id,) = tasks
        rec.add("submit", submit(side, config(task("x", depends=[task_id])), 2, description="raw"))
        rec.state(side, "after")

    compare(sides, scenario)


def test_6_edit_config_without_version(sides: tuple[Side, Side]) -> None:
    def scenario(side: Side, rec: Record) -> None:
        ds = _dataset_id(submit(side, config(task("a")), 1))
        rec.state(side)
        edited = config(task("a", requirements={"memory": 3}), version=None)
        body = {"dataset_id": ds, "config": json.dumps(edited), "description": "edited"}
        rec.add("edit", side.action_done("edit_config", body))
        _, stored = side.api("GET", f"/config/{ds}")
        rec.add("stored reqs", stored["tasks"][0].get("requirements"))
        rec.add("description", side.api("GET", f"/datasets/{ds}")[1]["description"])
        renamed = config(task("b"))
        rec.add("rename", side.action_done("edit_config", {"dataset_id": ds, "config": json.dumps(renamed)}))

    compare(sides, scenario)


# ---------------------------------------------------------------- 7. unknown groups


def test_7_unknown_auth_group_leaves_orphans(sides: tuple[Side, Side]) -> None:
    def scenario(side: Side, rec: Record) -> None:
        extra = json.dumps({"auth_groups_read": ["IceCube"]})
        body = {"config": json.dumps(config(task("a"))), "description": "bad group", "jobs_submitted": 1}
        status, created = side.action("submit", dict(body, extra_submit_fields=extra))
        rec.add("created", status)
        time.sleep(3)  # the services' client retries POST /datasets: 0, 0, 0.6, 1.8 s, ...
        _, record = side._call(
            side.actions_url, "GET", f"/actions/submit/{created['result']}", None, "alice", None
        )
        rec.add("still running", record["status"])
        found = side.api("GET", "/datasets", who="system")[1]
        rec.add("several orphans", len(found) >= 3)
        rec.add("datasets seen by alice", side.api("GET", "/datasets")[1])

    real = dict(compare(sides, scenario))
    assert real["several orphans"] is True


# ---------------------------------------------------------------- 8. PUT /config stores raw


def test_8_put_config_stores_raw(sides: tuple[Side, Side]) -> None:
    from airflow_provider_iceprod.dataset_config import validate_config

    def scenario(side: Side, rec: Record) -> None:
        ds = _dataset_id(submit(side, config(task("a")), 1))
        rec.state(side)
        raw = {"tasks": [{"name": "a", "trays": [{"modules": [{"src": "a.py"}]}]}], "version": 3.2}
        rec.add("put", side.api("PUT", f"/config/{ds}", raw))
        rec.add("get", side.api("GET", f"/config/{ds}"))
        body = {"dataset_id": ds, "config": json.dumps(config(task("a")))}
        rec.add("edit", side.action_done("edit_config", body))
        # what the provider now sends: the config filled by its own validator
        filled = validate_config(raw, force_version=True)
        rec.add("put filled", side.api("PUT", f"/config/{ds}", filled))
        rec.add("edit after filled", side.action_done("edit_config", body))

    real = dict(compare(sides, scenario))
    assert real["edit"]["error_message"] == "'depends'"
    assert real["edit after filled"]["status"] == "complete"


def test_8_put_config_validation(sides: tuple[Side, Side]) -> None:
    def scenario(side: Side, rec: Record) -> None:
        ds = _dataset_id(submit(side, config(task("a")), 1))
        rec.state(side)
        rec.add("no trays", side.api("PUT", f"/config/{ds}", {"version": 3.2, "tasks": [{"name": "a"}]}))
        rec.add("no version", side.api("PUT", f"/config/{ds}", config(task("a"), version=None)))
        rec.add(
            "v3.1 data on tray",
            side.api(
                "PUT",
                f"/config/{ds}",
                config({"name": "a", "trays": [{"data": [], "modules": [{"src": "a"}]}]}, version=None),
            ),
        )
        rec.add(
            "v3.2 data on tray",
            side.api(
                "PUT",
                f"/config/{ds}",
                config({"name": "a", "trays": [{"data": [], "modules": [{"src": "a"}]}]}),
            ),
        )
        rec.add("mismatch", side.api("PUT", f"/config/{ds}", dict(config(task("a")), dataset_id="0" * 32)))
        rec.add("get", side.api("GET", f"/config/{ds}"))

    compare(sides, scenario)


# ---------------------------------------------------------------- 9. logs


def test_9_dataset_without_config_is_suspended(sides: tuple[Side, Side]) -> None:
    """dataset_completion suspends a processing dataset without config (the low-level path's window)."""

    def scenario(side: Side, rec: Record) -> None:
        body = {"description": "no config", "jobs_submitted": 1, "tasks_submitted": 1, "tasks_per_job": 1}
        rec.add("post", side.api("POST", "/datasets", dict(body, group="users")))
        rec.state(side, "after crons")

    real = dict(compare(sides, scenario))
    assert real["after crons"][0]["status"] == "suspended"


def test_9_task_without_logs(sides: tuple[Side, Side]) -> None:
    def scenario(side: Side, rec: Record) -> None:
        side.fail_task("a")  # so "b" never runs and has no logs
        ds = _dataset_id(submit(side, config(task("a"), task("b", depends=["a"])), 1))
        rec.state(side)
        _, tasks = side.api("GET", f"/datasets/{ds}/tasks", params={"keys": "task_id|name"})
        task_id = next(t["task_id"] for t in tasks.values() if t["name"] == "b")
        rec.add("logs", side.api("GET", f"/datasets/{ds}/tasks/{task_id}/logs", params={"group": "true"}))
        rec.add("logs system", side.api("GET", f"/datasets/{ds}/tasks/{task_id}/logs", who="system"))

    compare(sides, scenario)


# ---------------------------------------------------------------- the provider's validator against IceProd's

VALIDATOR_CASES = [
    config(task("a"), task("b", depends=["a"], requirements={"memory": 2})),
    config(task("a", data=[{"remote": "gsiftp://host/x", "movement": "output"}])),
    config({"name": "a", "trays": []}),
    config(task("a", data=[{"type": "permanent"}])),
    config(task("a", data=[{"type": "job_temp", "remote": "gsiftp://x/y"}])),
    config(task("a", task_files=True)),
    config(task("a", bogus=1)),
    config({"name": "a", "trays": [{"modules": [{"src": "a", "x": 1}]}]}),
    config(task("a", requirements={"cpu": "two"})),
    config(),
]


def test_provider_validator_agrees_with_iceprod(sides: tuple[Side, Side]) -> None:
    """``dataset_config.validate_config`` (the provider's) fills and rejects like IceProd's submit."""
    from airflow_provider_iceprod.dataset_config import validate_config
    from airflow_provider_iceprod.exceptions import IceProdDatasetConfigError

    _, real = sides
    for cfg in VALIDATOR_CASES:
        status, answer = real.action(
            "submit", {"config": json.dumps(cfg), "description": "v", "jobs_submitted": 1}
        )
        try:
            mine: Any = validate_config(cfg, force_version=True)
        except IceProdDatasetConfigError as exc:
            mine = str(exc)
        if status == 201:
            _, record = real._call(
                real.actions_url, "GET", f"/actions/submit/{answer['result']}", None, "alice", None
            )
            assert mine == json.loads(record["payload"]["config"]), cfg
        else:
            assert (status, mine) == (400, answer["error"]), cfg
