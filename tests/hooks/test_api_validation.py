"""Input checks of the sans-IO API: bad input fails before anything is sent."""

from __future__ import annotations

import json

import pytest

from airflow_provider_iceprod import api
from airflow_provider_iceprod.exceptions import IceProdConfigError, IceProdDatasetConfigError

DATASET_ID = "061ad532eb9411f1bb1102fc00000001"
CONFIG = {"version": 3.2, "tasks": [{"name": "a", "trays": [{"modules": [{"src": "/bin/true"}]}]}]}


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (DATASET_ID, (DATASET_ID, None)),
        (7, (None, 7)),
        ("7", (None, 7)),
        (" 12 ", (None, 12)),
    ],
)
def test_dataset_refs(ref: object, expected: tuple) -> None:
    assert api.parse_ref(ref) == expected


@pytest.mark.parametrize("ref", [0, -1, True, "abc", "../datasets", "", None, 1.5, DATASET_ID + "0"])
def test_bad_dataset_refs(ref: object) -> None:
    with pytest.raises(IceProdConfigError) as info:
        api.parse_ref(ref)
    assert info.value.field == "dataset"


def test_ids_are_checked_before_they_reach_a_url() -> None:
    with pytest.raises(IceProdConfigError, match="task_id"):
        api.get_task(DATASET_ID, "../../admin")
    with pytest.raises(IceProdConfigError, match="dataset_id"):
        api.job_counts("x/y")


def test_multi_value_parameters_are_pipe_joined_and_checked() -> None:
    call = api.list_datasets(status=["processing", "errors"], keys=("dataset_id", "status"))
    assert call.params == {"status": "processing|errors", "keys": "dataset_id|status"}
    with pytest.raises(IceProdConfigError, match="truncated"):
        api.list_datasets(status="truncated")  # a flag, not a status
    with pytest.raises(IceProdConfigError, match="Unknown status"):
        api.list_tasks(DATASET_ID, status="running")


def test_priority_is_sent_as_float() -> None:
    call = api.set_priority(DATASET_ID, 1)
    assert call.json == {"priority": 1.0} and isinstance(call.json["priority"], float)
    with pytest.raises(IceProdConfigError):
        api.set_priority(DATASET_ID, "high")


def test_requirements_keys_are_checked() -> None:
    call = api.set_task_requirements(DATASET_ID, "my task", {"memory": 4.0})
    assert call.method == "PATCH" and call.path.endswith("/bulk_requirements/my%20task")
    with pytest.raises(IceProdConfigError, match="Unknown requirement"):
        api.set_task_requirements(DATASET_ID, "a", {"ram": 4})


def test_status_action_selectors() -> None:
    ctx = api.FlowContext()
    flow = api.status_action("task_status", DATASET_ID, "reset", ctx, initial_status="failed")
    call = next(flow)
    assert call.path == "/actions/task_status" and call.service == api.ACTIONS
    assert call.json == {"action": "reset", "initial_status": "failed", "dataset_id": DATASET_ID}
    with pytest.raises(IceProdConfigError, match="Unknown action"):
        next(api.status_action("dataset_status", DATASET_ID, "resume", ctx))
    with pytest.raises(IceProdConfigError, match="at most one"):
        next(api.status_action("task_status", DATASET_ID, "reset", ctx, initial_status="failed", job_ids=[]))


def test_check_submit_builds_the_bodies() -> None:
    req = api.check_submit(
        CONFIG,
        description="my dataset",
        jobs_submitted=3,
        extra_submit_fields={"priority": 1, "status": "suspended"},
        marker="dag.run.task.0",
    )
    body = req.submit_body()
    assert body["description"] == "my dataset [airflow:dag.run.task.0]"
    assert json.loads(body["config"])["version"] == 3.2
    assert json.loads(body["extra_submit_fields"]) == {"priority": 1.0, "status": "suspended"}
    low = api.check_submit(CONFIG, description="d", jobs_submitted=2, low_level=True, marker="m")
    assert low.create_body() == {
        "description": "d [airflow:m]",
        "jobs_submitted": 2,
        "tasks_submitted": 2,
        "tasks_per_job": 1,
        "group": "users",
    }


def test_check_submit_gives_a_random_marker_when_none() -> None:
    one = api.check_submit(CONFIG, description="d", jobs_submitted=1)
    two = api.check_submit(CONFIG, description="d", jobs_submitted=1)
    assert one.tag.startswith("[airflow:hook-") and one.tag != two.tag


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"jobs_submitted": 0}, "jobs_submitted"),
        ({"jobs_submitted": "3"}, "jobs_submitted"),
        ({"group": "everyone"}, "group"),
        ({"marker": "has space"}, "marker"),
        ({"marker": "x]"}, "marker"),
        ({"extra_submit_fields": {"description": "x"}}, "extra_submit_fields"),
        ({"extra_submit_fields": {"username": "bob"}}, "extra_submit_fields"),  # only low-level
        ({"extra_submit_fields": {"debug": "yes"}}, "extra_submit_fields"),
        # an unknown group leaves orphan datasets in IceProd 3.2.43 (docs/iceprod-quirks.md, 7)
        ({"extra_submit_fields": {"auth_groups_read": ["IceCube"]}}, "extra_submit_fields"),
        ({"extra_submit_fields": {"auth_groups_write": ["simprod"]}}, "extra_submit_fields"),
    ],
)
def test_check_submit_rejects_bad_input(kwargs: dict, field: str) -> None:
    args: dict = {"description": "d", "jobs_submitted": 1, **kwargs}
    with pytest.raises(IceProdConfigError) as info:
        api.check_submit(CONFIG, **args)
    assert info.value.field == field


def test_check_submit_accepts_iceprods_groups() -> None:
    req = api.check_submit(
        CONFIG,
        description="d",
        jobs_submitted=1,
        extra_submit_fields={"auth_groups_read": ["simprod", "users"]},
    )
    assert req.extra["auth_groups_read"] == ["simprod", "users"]


def test_check_submit_refuses_unresolvable_cross_dataset_depends() -> None:
    config = json.loads(json.dumps(CONFIG))
    config["tasks"][0]["depends"] = ["0123456789abcdef0123456789abcdef:a"]
    with pytest.raises(IceProdDatasetConfigError, match="cannot resolve"):
        api.check_submit(config, description="d", jobs_submitted=1)


def test_system_token_identity_is_iceprod_system() -> None:
    from airflow_provider_iceprod.auth.tokens import identity_from_claims

    claims = {
        "preferred_username": "service-account-x",
        "resource_access": {"iceprod": {"roles": ["iceprod-system"]}},
    }
    assert identity_from_claims(claims).username == "iceprod-system"  # the owner IceProd records
    assert identity_from_claims({"preferred_username": "alice"}).username == "alice"


def test_check_submit_validates_the_config_client_side() -> None:
    bad = {"version": 3.2, "tasks": [{"name": "a", "trays": []}]}
    with pytest.raises(IceProdDatasetConfigError, match=r"\[\] should be non-empty"):
        api.check_submit(bad, description="d", jobs_submitted=1)


def test_edit_config_checks_the_config_first() -> None:
    body = api.check_edit_config(CONFIG, "new text")
    sent = json.loads(body["config"])
    assert sent["tasks"][0]["depends"] == []  # sent filled, as IceProd fills it
    assert sent["tasks"][0]["trays"][0]["modules"][0]["src"] == "/bin/true"
    assert sent["tasks"][0]["name"] == "a" and body["description"] == "new text"
    # without a version it is sent as 3.2, filled (IceProd would use 3.1 and fail on 'depends')
    unversioned = {k: v for k, v in CONFIG.items() if k != "version"}
    assert json.loads(api.check_edit_config(unversioned)["config"])["version"] == 3.2
    with pytest.raises(IceProdDatasetConfigError):
        api.check_edit_config({"version": 3.2, "tasks": [{"name": "a", "trays": []}]})
    with pytest.raises(IceProdConfigError, match="description"):
        api.check_edit_config(CONFIG, 5)  # type: ignore[arg-type]
