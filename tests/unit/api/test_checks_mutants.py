"""Input checks, rule by rule: tests written from the survivors of ``make mutation`` (``api/checks.py``).

A bad value must fail before any request with an ``IceProdConfigError`` whose ``field`` names the
argument and whose message says what is allowed; a good value at the edge of a rule must pass."""

from __future__ import annotations

import re

import pytest

from airflow_provider_iceprod.api import checks
from airflow_provider_iceprod.exceptions import IceProdConfigError, IceProdDatasetConfigError

A = "061ad532eb9411f1bb1102fc00000001"
B = "061ad532eb9411f1bb1102fc00000002"
CONFIG = {"version": 3.2, "tasks": [{"name": "a", "trays": [{"modules": [{"src": "/bin/true"}]}]}]}
TWO_TASKS = {
    "version": 3.2,
    "tasks": [
        {"name": "a", "trays": [{"modules": [{"src": "/bin/true"}]}]},
        {"name": "b", "trays": [{"modules": [{"src": "/bin/true"}]}]},
    ],
}


def refused(call, *args, **kwargs) -> IceProdConfigError:  # type: ignore[no-untyped-def]
    with pytest.raises(IceProdConfigError) as info:
        call(*args, **kwargs)
    return info.value


# -- ids and dataset references -------------------------------------------------------------------


def test_a_bad_id_names_its_kind() -> None:
    error = refused(checks.object_id, "x/y")
    assert error.field == "dataset_id"
    assert str(error) == "dataset_id must be a 32-character hex IceProd id, got 'x/y'."
    assert refused(checks.object_id, "../..", "task_id").field == "task_id"


def test_dataset_number_one_is_a_dataset_and_zero_is_not() -> None:
    assert checks.dataset_ref(1) == 1 and checks.dataset_ref("1") == 1
    error = refused(checks.dataset_ref, "0", field="upstream")
    assert error.field == "upstream"
    assert str(error).startswith(
        "'upstream' must be an IceProd dataset id (32 hex characters), a dataset number"
    )
    assert str(error).endswith(
        "got '0'. From an upstream submit task use \"{{ ti.xcom_pull(task_ids='submit', key='dataset_id') }}\" "
        "or the task's .output."
    )


def test_an_id_list_is_lower_cased_and_every_error_names_the_list() -> None:
    assert checks.id_list([A.upper(), B], "job_ids") == [A, B]
    assert checks.id_list(iter([A]), "task_ids") == [A]
    not_a_list = refused(checks.id_list, A, "job_ids")
    assert (not_a_list.field, str(not_a_list)) == (
        "job_ids",
        f"job_ids must be a list of 32-hex ids, got {A!r}.",
    )
    one_bad = refused(checks.id_list, [A, "nope"], "task_ids")
    assert one_bad.field == "task_ids" and str(one_bad).startswith("task_ids must be a 32-character hex")
    empty = refused(checks.id_list, [], "job_ids")
    assert (empty.field, str(empty)) == ("job_ids", "job_ids is empty.")


def test_an_id_list_takes_up_to_iceprods_limit_of_100000() -> None:
    assert len(checks.id_list([A] * 100_000, "job_ids")) == 100_000
    error = refused(checks.id_list, [A] * 100_001, "job_ids")
    assert error.field == "job_ids"
    assert str(error) == "job_ids has 100001 ids; IceProd takes at most 100,000 per request."


# -- numbers --------------------------------------------------------------------------------------


def test_number_errors_say_what_the_field_must_be() -> None:
    assert (
        str(refused(checks.positive_int, -1, "cpu", allow_zero=True))
        == "'cpu' must be an integer >= 0, got -1."
    )
    assert str(refused(checks.positive_int, 0, "n")) == "'n' must be a positive integer, got 0."
    large = refused(checks.job_count, checks.MAX_JOBS + 1, "add_jobs")
    assert large.field == "add_jobs" and "1,000,001, more than 1,000,000 jobs" in str(large)
    for value in (None, [1], "x"):
        error = refused(checks.finite_number, value, "priority")
        assert (error.field, str(error)) == ("priority", f"'priority' must be a number, got {value!r}.")
    error = refused(checks.finite_number, 0, "timeout", positive=True)
    assert (error.field, str(error)) == ("timeout", "'timeout' must be a number > 0, got 0.")
    assert (
        str(refused(checks.finite_number, -1, "grace", minimum=0)) == "'grace' must be a number >= 0, got -1."
    )


def test_number_bounds_are_inclusive_where_documented() -> None:
    assert checks.finite_number(0.5, "timeout", positive=True) == 0.5
    assert checks.finite_number(0, "reconcile_grace", minimum=0) == 0.0
    assert checks.finite_number(2.5, "x", minimum=2.5) == 2.5


# -- names ----------------------------------------------------------------------------------------


def test_an_unknown_name_lists_what_iceprod_knows() -> None:
    error = refused(checks.one_of, "running", ("idle", "failed"), "status")
    assert (error.field, str(error)) == ("status", "Unknown status 'running'; IceProd knows idle, failed.")
    for value in ("physicists", None, 1):
        error = refused(checks.group_name, value)
        assert error.field == "group"
        assert str(error) == f"'group' must be one of users, simprod, filtering, admin, got {value!r}."
    error = refused(checks.joined, ["a", ""], "keys")
    assert (error.field, str(error)) == (
        "keys",
        "keys must be a string or a list of non-empty strings, got ['a', ''].",
    )


def test_task_requirements_messages_and_zero_values() -> None:
    assert checks.task_requirements({"gpu": 0, "cpu": 0, "memory": 0.5, "time": 0}) == {
        "gpu": 0,
        "cpu": 0,
        "memory": 0.5,
        "time": 0.0,
    }
    empty = refused(checks.task_requirements, {}, "reqs")
    assert (empty.field, str(empty)) == (
        "reqs",
        "reqs must be a non-empty dict of resources, e.g. {'memory': 4.0}.",
    )
    unknown = refused(checks.task_requirements, {"ram": 1})
    assert str(unknown) == (
        "Unknown requirement(s) ['ram'] in requirements; IceProd knows cpu, gpu, memory, disk, time, os, site."
    )
    bad_os = refused(checks.task_requirements, {"os": "RHEL_8"})
    assert str(bad_os) == "requirements['os'] must be a list of strings, got 'RHEL_8'."


# -- status actions -------------------------------------------------------------------------------


def test_status_action_bodies_carry_the_checked_selector() -> None:
    body = checks.status_action_body("job_status", "reset", job_ids=[A.upper()])
    assert body == {"action": "reset", "job_ids": [A]}
    body = checks.status_action_body("task_status", "hard_reset", task_ids=[B])
    assert body == {"action": "hard_reset", "task_ids": [B]}
    body = checks.status_action_body("job_status", "suspend", initial_status="errors")  # a job status
    assert body == {"action": "suspend", "initial_status": "errors"}
    assert checks.status_action_body("dataset_status", "reset") == {"action": "reset"}


@pytest.mark.parametrize(
    ("name", "kwargs", "field", "message"),
    [
        (
            "job",
            {},
            "action name",
            "Unknown action name 'job'; IceProd knows dataset_status, job_status, task_status.",
        ),
        (
            "dataset_status",
            {"job_ids": [A]},
            "initial_status",
            "dataset_status takes no initial_status, job_ids or task_ids.",
        ),
        (
            "task_status",
            {"initial_status": "failed", "task_ids": [A]},
            "initial_status",
            "Give at most one of initial_status, job_ids, task_ids.",
        ),
        ("job_status", {"task_ids": [A]}, "task_ids", "task_ids works with task_status only."),
        ("job_status", {"initial_status": "failed"}, "initial_status", "Unknown initial_status 'failed'"),
        ("task_status", {"initial_status": "errors"}, "initial_status", "Unknown initial_status 'errors'"),
        ("job_status", {"job_ids": ["x"]}, "job_ids", "job_ids must be a 32-character hex IceProd id"),
        ("task_status", {"task_ids": []}, "task_ids", "task_ids is empty."),
    ],
)
def test_a_bad_status_action_names_the_argument(name: str, kwargs: dict, field: str, message: str) -> None:
    error = refused(checks.status_action_body, name, "reset", **kwargs)
    assert error.field == field
    assert str(error).startswith(message)


def test_action_names_and_request_ids() -> None:
    assert checks.action_name("dataset_status") == "dataset_status"
    error = refused(checks.action_name, "Submit!")
    assert (error.field, str(error)) == ("name", "Not an IceProd action name: 'Submit!'.")
    assert checks.action_request_id("aZ09_-") == "aZ09_-"
    assert checks.action_request_id("Z" * 64) == "Z" * 64
    for value in ("../x", "", "a" * 65, 7):
        error = refused(checks.action_request_id, value)
        assert (error.field, str(error)) == ("request_id", f"Not an IceProd action request id: {value!r}.")


# -- submit ---------------------------------------------------------------------------------------


def test_marker_rules_and_the_random_marker() -> None:
    error = refused(checks.marker_tag, "a b")
    assert str(error) == "marker must be 1-200 characters without spaces or square brackets, got 'a b'."
    assert checks.marker_tag("m" * 200) == f"[airflow:{'m' * 200}]"
    assert re.fullmatch(r"hook-[0-9a-f]{16}", checks.new_marker())


def test_username_is_a_low_level_field_only() -> None:
    error = refused(checks.extra_fields, {"username": "bob"})
    assert error.field == "extra_submit_fields"
    assert str(error) == (
        "extra_submit_fields key 'username' is not allowed; use priority, debug, jobs_immutable, always_active, "
        "status, auth_groups_read (description, jobs_submitted and group are arguments of the submit)."
    )
    assert checks.extra_fields({"username": "bob"}, low_level=True) == {"username": "bob"}
    error = refused(checks.extra_fields, {"username": 7}, low_level=True)
    assert str(error) == "extra_submit_fields.username must be a user name, got 7."


def test_extra_fields_flags_statuses_and_groups() -> None:
    flags = {"debug": False, "jobs_immutable": True, "always_active": True}
    assert checks.extra_fields(flags) == flags
    for key in flags:
        error = refused(checks.extra_fields, {key: "yes"})
        assert error.field == f"extra_submit_fields.{key}"
        assert str(error) == f"extra_submit_fields.{key} must be true or false, got 'yes'."
    error = refused(checks.extra_fields, ["priority"])
    assert (error.field, str(error)) == (
        "extra_submit_fields",
        "extra_submit_fields must be a dict, got list.",
    )
    error = refused(checks.extra_fields, {"status": "complete"})
    assert str(error) == "extra_submit_fields.status must be processing or suspended, got 'complete'."
    for groups in ("users", [""], [1]):
        error = refused(checks.extra_fields, {"auth_groups_read": groups})
        assert str(error) == f"extra_submit_fields.auth_groups_read must be a list of groups, got {groups!r}."
    error = refused(checks.extra_fields, {"auth_groups_read": ["users", "IceCube"]})
    assert str(error) == (
        "extra_submit_fields.auth_groups_read: unknown group(s) ['IceCube']; "
        "IceProd's groups are users, simprod, filtering, admin."
    )


def test_the_submit_bodies_hold_every_field() -> None:
    req = checks.check_submit(TWO_TASKS, description="d", jobs_submitted=3, group="simprod", marker="m")
    body = req.submit_body()
    assert set(body) == {"config", "description", "jobs_submitted", "group"}
    assert (body["jobs_submitted"], body["group"]) == (3, "simprod")
    assert req.create_body() == {
        "description": "d [airflow:m]",
        "jobs_submitted": 3,
        "tasks_submitted": 6,
        "tasks_per_job": 2,
        "group": "simprod",
    }


def test_submit_defaults_and_passed_options() -> None:
    plain = checks.check_submit(CONFIG, description="d", jobs_submitted=1)
    assert (plain.low_level, plain.materialize, plain.timeout) == (False, False, 900.0)
    assert plain.reconcile_grace == checks.DEFAULT_RECONCILE_GRACE
    req = checks.check_submit(
        CONFIG,
        description="d",
        jobs_submitted=checks.MAX_JOBS + 1,
        allow_large=True,
        low_level=True,
        materialize=True,
        extra_submit_fields={"username": "bob"},
        reconcile_grace=0,
    )
    assert (req.low_level, req.materialize, req.jobs_submitted) == (True, True, checks.MAX_JOBS + 1)
    assert req.extra == {"username": "bob"} and req.reconcile_grace == 0.0


def test_a_config_without_a_version_is_sent_as_3_2() -> None:
    """Like ``POST /actions/submit``, which sets the version itself."""
    config = {"tasks": CONFIG["tasks"]}
    assert checks.check_submit(config, description="d", jobs_submitted=1).config["version"] == 3.2


def test_submit_errors_name_the_argument() -> None:
    with pytest.raises(IceProdDatasetConfigError) as info:
        checks.check_submit({"version": 3.2, "tasks": []}, description="d", jobs_submitted=1)
    assert info.value.field == "config['tasks']"
    assert str(info.value) == "Validation error in config['tasks']: a dataset needs at least one task"
    error = refused(checks.check_submit, CONFIG, description="d", jobs_submitted=1, tasks_per_job=0)
    assert error.field == "tasks_per_job"
    error = refused(checks.check_submit, CONFIG, description=" ", jobs_submitted=1)
    assert str(error) == "'description' must be a non-empty string, got ' '."
