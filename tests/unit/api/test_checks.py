"""Input checks of the sans-IO API: bad input fails before anything is sent."""

from __future__ import annotations

import json

import pytest

from airflow_provider_iceprod.api import calls, checks, flows
from airflow_provider_iceprod.exceptions import IceProdConfigError, IceProdDatasetConfigError

DATASET_ID = "061ad532eb9411f1bb1102fc00000001"
CONFIG = {"version": 3.2, "tasks": [{"name": "a", "trays": [{"modules": [{"src": "/bin/true"}]}]}]}


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        (DATASET_ID, DATASET_ID),
        (DATASET_ID.upper(), DATASET_ID),
        (7, 7),
        ("7", 7),
        (" 12 ", 12),
        ({"dataset_id": DATASET_ID, "dataset": 7}, DATASET_ID),  # the submit operator's XCom
        ({"dataset": 7}, 7),
    ],
)
def test_dataset_refs(ref: object, expected: object) -> None:
    assert checks.dataset_ref(ref) == expected


@pytest.mark.parametrize(
    "ref", [0, -1, True, "abc", "../datasets", "", None, 1.5, DATASET_ID + "0", {"id": DATASET_ID}]
)
def test_bad_dataset_refs(ref: object) -> None:
    with pytest.raises(IceProdConfigError, match="dataset id") as info:
        checks.dataset_ref(ref)
    assert info.value.field == "dataset"
    with pytest.raises(IceProdConfigError) as info:
        checks.dataset_ref(ref, field="upstream")
    assert info.value.field == "upstream"


def test_ids_are_checked_before_they_reach_a_url() -> None:
    with pytest.raises(IceProdConfigError, match="task_id"):
        calls.get_task(DATASET_ID, "../../admin")
    with pytest.raises(IceProdConfigError, match="dataset_id"):
        calls.job_counts("x/y")


def test_multi_value_parameters_are_pipe_joined_and_checked() -> None:
    call = calls.list_datasets(status=["processing", "errors"], keys=("dataset_id", "status"))
    assert call.params == {"status": "processing|errors", "keys": "dataset_id|status"}
    with pytest.raises(IceProdConfigError, match="truncated"):
        calls.list_datasets(status="truncated")  # a flag, not a status
    with pytest.raises(IceProdConfigError, match="Unknown status"):
        calls.list_tasks(DATASET_ID, status="running")


def test_priority_is_sent_as_float() -> None:
    call = calls.set_priority(DATASET_ID, 1)
    assert call.json == {"priority": 1.0} and isinstance(call.json["priority"], float)
    with pytest.raises(IceProdConfigError):
        calls.set_priority(DATASET_ID, "high")


def test_requirements_keys_are_checked() -> None:
    call = calls.set_task_requirements(DATASET_ID, "my task", {"memory": 4.0})
    assert call.method == "PATCH" and call.path.endswith("/bulk_requirements/my%20task")
    with pytest.raises(IceProdConfigError, match="Unknown requirement"):
        calls.set_task_requirements(DATASET_ID, "a", {"ram": 4})


def test_status_action_selectors() -> None:
    ctx = flows.FlowContext()
    flow = flows.status_action("task_status", DATASET_ID, "reset", ctx, initial_status="failed")
    call = next(flow)
    assert call.path == "/actions/task_status" and call.service == calls.ACTIONS
    assert call.json == {"action": "reset", "initial_status": "failed", "dataset_id": DATASET_ID}
    with pytest.raises(IceProdConfigError, match="Unknown action"):
        next(flows.status_action("dataset_status", DATASET_ID, "resume", ctx))
    with pytest.raises(IceProdConfigError, match="at most one"):
        next(
            flows.status_action("task_status", DATASET_ID, "reset", ctx, initial_status="failed", job_ids=[])
        )


def test_check_submit_builds_the_bodies() -> None:
    req = checks.check_submit(
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
    low = checks.check_submit(CONFIG, description="d", jobs_submitted=2, low_level=True, marker="m")
    assert low.create_body() == {
        "description": "d [airflow:m]",
        "jobs_submitted": 2,
        "tasks_submitted": 2,
        "tasks_per_job": 1,
        "group": "users",
    }


def test_check_submit_accepts_zero_jobs_as_iceprod_does() -> None:
    """IceProd 3.2.43 takes ``jobs_submitted: 0`` (an empty dataset that gets jobs through add_jobs)."""
    zero = checks.check_submit(CONFIG, description="d", jobs_submitted="0", marker="m")
    assert zero.jobs_submitted == 0
    assert zero.submit_body()["jobs_submitted"] == 0
    body = checks.check_submit(CONFIG, description="d", jobs_submitted=0, low_level=True).create_body()
    # tasks_submitted must be 0 too: IceProd divides tasks_submitted by jobs_submitted otherwise
    assert (body["jobs_submitted"], body["tasks_submitted"], body["tasks_per_job"]) == (0, 0, 1)


def test_job_count_refuses_zero_unless_allowed() -> None:
    with pytest.raises(IceProdConfigError, match="'value' must be a positive integer, got 0"):
        checks.job_count(0, "value")  # add_jobs: adding nothing is a mistake
    assert checks.job_count(0, "jobs_submitted", allow_zero=True) == 0
    with pytest.raises(IceProdConfigError, match="must be an integer >= 0, got -1"):
        checks.job_count(-1, "jobs_submitted", allow_zero=True)
    with pytest.raises(IceProdConfigError, match="allow_large"):
        checks.job_count(checks.MAX_JOBS + 1, "jobs_submitted", allow_zero=True)


def test_check_submit_gives_a_random_marker_when_none() -> None:
    one = checks.check_submit(CONFIG, description="d", jobs_submitted=1)
    two = checks.check_submit(CONFIG, description="d", jobs_submitted=1)
    assert one.tag.startswith("[airflow:hook-") and one.tag != two.tag


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"jobs_submitted": -1}, "jobs_submitted"),
        ({"jobs_submitted": "three"}, "jobs_submitted"),
        ({"jobs_submitted": True}, "jobs_submitted"),
        ({"description": "  "}, "description"),
        ({"timeout": 0}, "timeout"),
        ({"reconcile_grace": -1}, "reconcile_grace"),
        ({"tasks_per_job": 2}, "config['tasks']"),
        ({"group": "everyone"}, "group"),
        ({"marker": "has space"}, "marker"),
        ({"marker": "x]"}, "marker"),
        ({"extra_submit_fields": {"description": "x"}}, "extra_submit_fields"),
        ({"extra_submit_fields": {"username": "bob"}}, "extra_submit_fields"),  # only low-level
        ({"extra_submit_fields": {"debug": "yes"}}, "extra_submit_fields.debug"),
        ({"extra_submit_fields": {"status": "complete"}}, "extra_submit_fields.status"),
        ({"extra_submit_fields": {"priority": "high"}}, "extra_submit_fields.priority"),
        ({"extra_submit_fields": {"auth_groups_read": "users"}}, "extra_submit_fields.auth_groups_read"),
        # an unknown group leaves orphan datasets in IceProd 3.2.43 (docs/iceprod-quirks.md, 7)
        ({"extra_submit_fields": {"auth_groups_read": ["IceCube"]}}, "extra_submit_fields.auth_groups_read"),
        ({"extra_submit_fields": {"auth_groups_write": ["simprod"]}}, "extra_submit_fields"),
    ],
)
def test_check_submit_rejects_bad_input(kwargs: dict, field: str) -> None:
    args: dict = {"description": "d", "jobs_submitted": 1, **kwargs}
    with pytest.raises(IceProdConfigError) as info:
        checks.check_submit(CONFIG, **args)
    assert info.value.field == field


def test_check_submit_accepts_iceprods_groups() -> None:
    req = checks.check_submit(
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
        checks.check_submit(config, description="d", jobs_submitted=1)


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
        checks.check_submit(bad, description="d", jobs_submitted=1)


@pytest.mark.parametrize(
    ("value", "expected"), [(3, 3), (3.0, 3), ("3", 3), (" 12 ", 12), ("0", None), (0, None), (-1, None)]
)
def test_positive_int_reads_rendered_text(value: object, expected: int | None) -> None:
    if expected is None:
        with pytest.raises(IceProdConfigError, match="'n' must be a positive integer") as info:
            checks.positive_int(value, "n")
        assert info.value.field == "n"
    else:
        assert checks.positive_int(value, "n") == expected
    assert checks.positive_int(0, "n", allow_zero=True) == 0


@pytest.mark.parametrize("value", [True, 1.5, "1.5", "x", None, [1]])
def test_positive_int_refuses_what_is_not_a_whole_number(value: object) -> None:
    with pytest.raises(IceProdConfigError):
        checks.positive_int(value, "n")


def test_finite_number_bounds() -> None:
    assert checks.finite_number(" 0.5 ", "p") == 0.5 and checks.finite_number(2, "p") == 2.0
    for bad, kwargs in [("nan", {}), (float("inf"), {}), (True, {}), ("x", {}), (0, {"positive": True})]:
        with pytest.raises(IceProdConfigError):
            checks.finite_number(bad, "p", **kwargs)
    with pytest.raises(IceProdConfigError, match=">= 0"):
        checks.finite_number(-0.1, "p", minimum=0)


def test_task_requirements_are_typed() -> None:
    checked = checks.task_requirements({"cpu": "2", "memory": 4, "os": ("RHEL_8",), "site": "WIPAC"})
    assert checked == {"cpu": 2, "memory": 4.0, "os": ["RHEL_8"], "site": "WIPAC"}
    for bad, field in [
        ({"cpu": 1.5}, "requirements['cpu']"),
        ({"memory": -1}, "requirements['memory']"),
        ({"os": "RHEL_8"}, "requirements['os']"),
        ({}, "requirements"),
        ({"ram": 1}, "requirements"),
    ]:
        with pytest.raises(IceProdConfigError) as info:
            checks.task_requirements(bad)
        assert info.value.field == field


def test_names_ids_and_lists() -> None:
    assert checks.group_name(" simprod ") == "simprod"
    assert checks.object_id(DATASET_ID.upper()) == DATASET_ID
    with pytest.raises(IceProdConfigError, match="group"):
        checks.group_name("physicists")
    with pytest.raises(IceProdConfigError, match="empty"):
        checks.id_list([], "job_ids")
    with pytest.raises(IceProdConfigError, match="list of 32-hex ids"):
        checks.id_list(DATASET_ID, "job_ids")  # one id, not a list
    with pytest.raises(IceProdConfigError, match="non-empty strings"):
        checks.joined(["a|b"], "keys")
    with pytest.raises(IceProdConfigError, match="action name"):
        calls.post_action("Submit!", {})
    with pytest.raises(IceProdConfigError, match="request id"):
        calls.get_action("submit", "../x")
    with pytest.raises(IceProdConfigError, match="task_status only"):
        checks.status_action_body("job_status", "reset", task_ids=[DATASET_ID])
    with pytest.raises(IceProdConfigError, match="takes no"):
        checks.status_action_body("dataset_status", "reset", initial_status="failed")
    with pytest.raises(IceProdConfigError, match="not both"):
        calls.bulk_task_action(DATASET_ID, "reset", job_ids=[DATASET_ID], task_ids=[DATASET_ID])


def test_extra_fields_rule() -> None:
    extra = {"priority": "1", "status": "suspended", "debug": True, "auth_groups_read": ("users",)}
    assert checks.extra_fields(extra) == {
        "priority": 1.0,
        "status": "suspended",
        "debug": True,
        "auth_groups_read": ["users"],
    }
    assert checks.extra_fields({"username": "bob"}, low_level=True) == {"username": "bob"}
    with pytest.raises(IceProdConfigError, match="must be a dict"):
        checks.extra_fields(["priority"])  # type: ignore[arg-type]
    with pytest.raises(IceProdConfigError) as info:
        checks.extra_fields({"username": ""}, low_level=True)
    assert info.value.field == "extra_submit_fields.username"


def test_check_submit_sends_the_config_filled() -> None:
    """PUT /config stores the body as sent (docs/iceprod-quirks.md, 8): send it filled like IceProd."""
    sent = checks.check_submit(CONFIG, description="d", jobs_submitted=1).config
    assert sent["version"] == 3.2 and sent["tasks"][0]["depends"] == []
    assert sent["tasks"][0]["requirements"] == {"cpu": 1, "memory": 1.0, "disk": 1.0, "time": 1.0, "os": []}


def test_job_counts_have_one_range_check() -> None:
    """Issue 13 #9: jobs_submitted and add_jobs share one bound; negative priorities pass."""
    assert checks.job_count(checks.MAX_JOBS, "n") == checks.MAX_JOBS
    with pytest.raises(IceProdConfigError, match="allow_large=True"):
        checks.job_count(checks.MAX_JOBS + 1, "n")
    assert checks.job_count(10**12, "n", allow_large=True) == 10**12
    with pytest.raises(IceProdConfigError, match="jobs_submitted"):
        checks.check_submit(CONFIG, description="d", jobs_submitted=10**12)
    assert checks.extra_fields({"priority": -1}) == {"priority": -1.0}
    assert calls.set_priority(DATASET_ID, -0.5).json == {"priority": -0.5}
