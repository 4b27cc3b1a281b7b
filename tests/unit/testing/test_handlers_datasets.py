"""Fidelity of the dataset, config, group and health routes (reference §2-§4.2), over plain HTTP."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from standin_helpers import TWO_TASK_CONFIG, Api, assert_error, new_dataset_body

from airflow_provider_iceprod.testing import LocalIceProd


def _create(api: Api, **overrides: object) -> str:
    resp = api("POST", "/datasets", new_dataset_body(**overrides))
    assert resp.status_code == 201, resp.text
    return str(resp.json()["result"])


# ------------------------------------------------------------------ auth (§3)


def test_missing_invalid_and_expired_tokens_are_403_authentication_failed(
    iceprod_server: LocalIceProd,
) -> None:
    anonymous = Api(iceprod_server, None)
    assert_error(anonymous("GET", "/datasets"), 403, "authentication failed")
    anonymous.headers = {"Authorization": "Bearer not-a-jwt"}
    assert_error(anonymous("GET", "/datasets"), 403, "authentication failed")
    anonymous.headers = {"Authorization": "Basic YWxpY2U6eA=="}
    assert_error(anonymous("GET", "/datasets"), 403, "authentication failed")
    alice = Api(iceprod_server, "alice")
    assert alice("GET", "/datasets").status_code == 200
    iceprod_server.expire_access_tokens()
    assert_error(alice("GET", "/datasets"), 403, "authentication failed")


def test_token_from_another_issuer_is_rejected(iceprod_server: LocalIceProd) -> None:
    with LocalIceProd() as other:
        foreign = Api(iceprod_server, None)
        foreign.headers = {"Authorization": f"Bearer {other.access_token('alice')}"}
        assert_error(foreign("GET", "/datasets"), 403, "authentication failed")


def test_expiry_after_lifetime_and_leeway() -> None:
    # ``exp`` is whole seconds (floor(now) + lifetime), so a 1 s lifetime can be
    # already over by the first call on a loaded machine: give it room, then wait
    # until the token's own ``exp`` has passed.
    with LocalIceProd(token_lifetime=5, auth_leeway=0) as ip:
        api = Api(ip, "alice")
        assert api("GET", "/datasets").status_code == 200
        token = api.headers["Authorization"].removeprefix("Bearer ")
        expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
        time.sleep(max(0.0, expires_at + 1.1 - time.time()))
        assert_error(api("GET", "/datasets"), 403, "authentication failed")


def test_no_icecube_group_is_403_authorization_failed(iceprod_server: LocalIceProd) -> None:
    outsider = Api(iceprod_server, "outsider")
    assert_error(outsider("GET", "/datasets"), 403, "authorization failed")
    assert_error(outsider("GET", "/actions/submit"), 403, "authorization failed")


def test_unknown_dataset_non_admin_403_admin_404(alice: Api, admin: Api) -> None:
    assert_error(alice("GET", "/datasets/0123456789abcdef"), 403, "attr not found")
    assert_error(admin("GET", "/datasets/0123456789abcdef"), 404, "Dataset not found")


def test_per_dataset_acl(iceprod_server: LocalIceProd, alice: Api, admin: Api) -> None:
    bob = Api(iceprod_server, "bob")
    users_ds = _create(alice)
    simprod_ds = _create(alice, group="simprod")
    # every IceCube member reads; only the owner (and admins) write a "users" dataset
    assert bob("GET", f"/datasets/{users_ds}").status_code == 200
    assert_error(bob("PUT", f"/datasets/{users_ds}/priority", {"priority": 0.1}), 403, "authorization failed")
    assert alice("PUT", f"/datasets/{users_ds}/priority", {"priority": 0.1}).status_code == 200
    assert admin("PUT", f"/datasets/{users_ds}/priority", {"priority": 0.2}).status_code == 200
    # bob is not in simprod: read yes, write no
    assert bob("GET", f"/datasets/{simprod_ds}").status_code == 200
    assert_error(
        bob("PUT", f"/datasets/{simprod_ds}/description", {"description": "x"}), 403, "authorization failed"
    )
    # without the default auth_groups_read=["users"], a simprod dataset is hidden from non-members
    private = _create(alice, group="simprod", auth_groups_read=[])
    assert_error(bob("GET", f"/datasets/{private}"), 403, "authorization failed")
    assert private not in bob.ok("GET", "/datasets")
    assert private in alice.ok("GET", "/datasets")
    # ...but a "users" dataset stays readable by every IceCube member: its group is always a reader
    users_private = _create(alice, auth_groups_read=[])
    assert bob("GET", f"/datasets/{users_private}").status_code == 200


def test_unknown_route_is_html_404(alice: Api) -> None:
    for path in ("/nope", "/datasets/", "/actions/unknown_action"):
        resp = alice("GET", path)
        assert resp.status_code == 404
        assert resp.headers["Content-Type"].startswith("text/html")
        assert "404: Not Found" in resp.text


def test_malformed_json_body_is_500(alice: Api) -> None:
    dataset_id = _create(alice)
    assert_error(
        alice("PUT", f"/datasets/{dataset_id}/status", data="{bad"), 500, "Error in DatasetStatusHandler"
    )
    assert_error(alice("POST", "/datasets", data="not json"), 500, "Error in MultiDatasetHandler")
    assert_error(alice("PUT", f"/config/{dataset_id}", data=""), 500, "Error in ConfigHandler")


def test_healthz_needs_no_token(iceprod_server: LocalIceProd) -> None:
    assert Api(iceprod_server, None).ok("GET", "/healthz") == {}


def test_groups_admin_and_system_only(iceprod_server: LocalIceProd, alice: Api, admin: Api) -> None:
    expected = {
        "results": [
            {"name": "admin", "priority": 1.0},
            {"name": "simprod", "priority": 0.5},
            {"name": "filtering", "priority": 0.9},
            {"name": "users", "priority": 0.8},
        ]
    }
    assert admin.ok("GET", "/groups") == expected
    assert_error(alice("GET", "/groups"), 403, "authorization failed")
    system = Api(iceprod_server, None)
    system.headers = {"Authorization": f"Bearer {iceprod_server.service_access_token()}"}
    assert system.ok("GET", "/groups") == expected


# ------------------------------------------------------------------ POST /datasets (§4.1)


def test_create_dataset_document(alice: Api) -> None:
    resp = alice("POST", "/datasets", new_dataset_body(description="airflow test"))
    assert resp.status_code == 201
    dataset_id = resp.json()["result"]
    assert resp.headers["Location"] == f"/datasets/{dataset_id}"
    assert len(dataset_id) == 32 and int(dataset_id, 16) >= 0
    doc = alice.ok("GET", f"/datasets/{dataset_id}")
    start = doc.pop("start_date")
    assert len(start) == 26 and start[10] == "T" and not start.endswith("Z")
    assert doc == {
        "description": "airflow test",
        "jobs_submitted": 2,
        "tasks_submitted": 4,
        "tasks_per_job": 2,
        "group": "users",
        "dataset_id": dataset_id,
        "dataset": 1,
        "status": "processing",
        "username": "alice",
        "priority": 0.5,
        "debug": False,
        "jobs_immutable": False,
        "truncated": False,
        "always_active": False,
    }
    assert alice.ok("GET", f"/datasets/{_create(alice)}")["dataset"] == 2


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"description": None}, 'key "description" should be of type str'),
        ({"jobs_submitted": "2"}, 'key "jobs_submitted" should be of type int'),
        ({"group": 1}, 'key "group" should be of type str'),
        ({"priority": 1}, 'key "priority" should be of type float'),
        ({"debug": "yes"}, 'key "debug" should be of type bool'),
        ({"auth_groups_read": "users"}, 'key "auth_groups_read" should be of type list'),
        ({"idempotency_key": "abc"}, "invalid keys found"),
        ({"tasks_submitted": 5}, '"tasks_per_job" does not match "tasks_submitted"/"jobs_submitted"'),
        ({"jobs_submitted": 0, "tasks_submitted": 0, "tasks_per_job": 0}, '"tasks_per_job" must be > 0'),
        ({"status": "truncated"}, "unknown status"),
    ],
)
def test_create_dataset_validation(
    alice: Api, iceprod_server: LocalIceProd, overrides: dict, reason: str
) -> None:
    body = new_dataset_body(**overrides)
    if overrides.get("description", "") is None:
        body["description"] = None
    assert_error(alice("POST", "/datasets", body), 400, reason)
    assert iceprod_server.dataset_count() == 0


@pytest.mark.parametrize(
    "missing", ["description", "jobs_submitted", "tasks_submitted", "tasks_per_job", "group"]
)
def test_create_dataset_missing_key(alice: Api, missing: str) -> None:
    body = new_dataset_body()
    del body[missing]
    assert_error(alice("POST", "/datasets", body), 400, f"missing key: {missing}")


def test_create_dataset_server_errors(alice: Api, admin: Api, iceprod_server: LocalIceProd) -> None:
    # jobs_submitted=0 with tasks_submitted>0 divides by zero on the server
    body = new_dataset_body(jobs_submitted=0, tasks_submitted=2)
    assert_error(alice("POST", "/datasets", body), 500, "Error in MultiDatasetHandler")
    assert iceprod_server.dataset_count() == 0
    # an unknown group fails after the insert: an orphan without ACL that only admins can see
    assert_error(
        alice("POST", "/datasets", new_dataset_body(group="nope")), 500, "Error in MultiDatasetHandler"
    )
    (orphan,) = iceprod_server.datasets()
    assert_error(alice("GET", f"/datasets/{orphan['dataset_id']}"), 403, "attr not found")
    assert admin.ok("GET", f"/datasets/{orphan['dataset_id']}")["group"] == "nope"


def test_username_forced_for_users_but_not_admins(
    alice: Api, admin: Api, iceprod_server: LocalIceProd
) -> None:
    mine = _create(alice, username="bob")
    assert alice.ok("GET", f"/datasets/{mine}")["username"] == "alice"
    theirs = _create(admin, username="bob")
    assert admin.ok("GET", f"/datasets/{theirs}")["username"] == "bob"
    assert _create(alice, group="simprod")  # no group-membership check on POST /datasets
    bob = Api(iceprod_server, "bob")
    assert bob.ok("GET", f"/datasets/{theirs}")["username"] == "bob"


def test_jobs_submitted_zero_with_tasks_per_job(alice: Api) -> None:
    dataset_id = _create(alice, jobs_submitted=0, tasks_submitted=0, tasks_per_job=3)
    assert alice.ok("GET", f"/datasets/{dataset_id}")["tasks_per_job"] == 3


# ------------------------------------------------------------------ GET /datasets and summaries


def test_list_filters_and_keys(alice: Api, admin: Api) -> None:
    a = _create(alice, description="first")
    b = _create(alice, description="second", status="suspended")
    c = _create(admin, description="admins", username="admin", group="admin", auth_groups_read=[])
    listed = alice.ok("GET", "/datasets")
    assert set(listed) == {a, b}  # the admins-only dataset is not readable by alice
    assert set(admin.ok("GET", "/datasets")) == {a, b, c}
    assert set(alice.ok("GET", "/datasets", params={"status": "processing"})) == {a}
    assert set(alice.ok("GET", "/datasets", params={"status": "processing|suspended"})) == {a, b}
    assert set(admin.ok("GET", "/datasets", params={"users": "admin"})) == {c}
    assert set(admin.ok("GET", "/datasets", params={"groups": "users"})) == {a, b}
    projected = alice.ok("GET", "/datasets", params={"keys": "status|description"})
    assert projected[a] == {"dataset_id": a, "status": "processing", "description": "first"}
    assert_error(alice("GET", "/datasets", params={"status": "truncated"}), 400, "unknown status")
    # GET /datasets/{id} ignores keys
    assert "jobs_submitted" in alice.ok("GET", f"/datasets/{a}", params={"keys": "status"})


def test_dataset_summaries_status(alice: Api, admin: Api) -> None:
    a = _create(alice)
    b = _create(alice, status="suspended")
    c = _create(alice)
    hidden = _create(admin, group="admin", auth_groups_read=[])
    assert alice.ok("GET", "/dataset_summaries/status") == {"processing": [a, c], "suspended": [b]}
    assert hidden in admin.ok("GET", "/dataset_summaries/status")["processing"]


# ------------------------------------------------------------------ dataset updates


def test_description(alice: Api, admin: Api) -> None:
    dataset_id = _create(alice)
    assert alice.ok("PUT", f"/datasets/{dataset_id}/description", {"description": "new"}) == {}
    assert alice.ok("GET", f"/datasets/{dataset_id}")["description"] == "new"
    assert_error(alice("PUT", f"/datasets/{dataset_id}/description", {}), 400, "missing description")
    assert_error(
        alice("PUT", f"/datasets/{dataset_id}/description", {"description": 3}), 400, "bad description"
    )
    assert_error(admin("PUT", "/datasets/abc/description", {"description": "x"}), 404, "Dataset not found")


def test_status_state_machine(alice: Api, admin: Api) -> None:
    dataset_id = _create(alice)
    path = f"/datasets/{dataset_id}/status"
    assert alice.ok("PUT", path, {"status": "processing"}) == {}  # same status again: 200
    assert alice.ok("PUT", path, {"status": "suspended"}) == {}
    assert_error(alice("PUT", path, {"status": "complete"}), 400, "Bad state transition for status")
    assert alice.ok("PUT", path, {"status": "processing"}) == {}
    assert alice.ok("PUT", path, {"status": "errors"}) == {}
    assert alice.ok("PUT", path, {"status": "suspended"}) == {}
    assert alice.ok("PUT", path, {"status": "processing"}) == {}
    assert alice.ok("PUT", path, {"status": "complete"}) == {}
    assert_error(alice("PUT", path, {"status": "processing"}), 400, "Bad state transition for status")
    assert_error(alice("PUT", path, {}), 400, "missing status")
    assert_error(alice("PUT", path, {"status": "failed"}), 400, "bad status")
    assert_error(admin("PUT", "/datasets/abc/status", {"status": "suspended"}), 404, "Dataset not found")


def test_priority(alice: Api, admin: Api) -> None:
    dataset_id = _create(alice)
    path = f"/datasets/{dataset_id}/priority"
    assert alice.ok("PUT", path, {"priority": 0.9}) == {}
    assert alice.ok("PUT", path, {"priority": 1}) == {}  # ints are numbers here
    assert alice.ok("GET", f"/datasets/{dataset_id}")["priority"] == 1
    assert_error(alice("PUT", path, {}), 400, "missing priority")
    assert_error(alice("PUT", path, {"priority": "high"}), 400, "priority is not a number")
    assert_error(admin("PUT", "/datasets/abc/priority", {"priority": 0.1}), 404, "Dataset not found")


def test_jobs_submitted(iceprod_server: LocalIceProd, alice: Api, admin: Api) -> None:
    dataset_id = _create(alice)
    path = f"/datasets/{dataset_id}/jobs_submitted"
    assert alice.ok("PUT", path, {"jobs_submitted": "5"}) == {}
    doc = alice.ok("GET", f"/datasets/{dataset_id}")
    assert (doc["jobs_submitted"], doc["tasks_submitted"]) == (5, 10)
    assert_error(alice("PUT", path, {"jobs_submitted": 3}), 400, "jobs_submitted must be larger than before")
    assert_error(alice("PUT", path, {}), 400, "missing jobs_submitted")
    assert_error(alice("PUT", path, {"jobs_submitted": "many"}), 400, "jobs_submitted is not an int")
    immutable = _create(alice, jobs_immutable=True)
    assert_error(
        alice("PUT", f"/datasets/{immutable}/jobs_submitted", {"jobs_submitted": 9}),
        400,
        "jobs_submitted is immutable",
    )
    assert_error(
        admin("PUT", "/datasets/abc/jobs_submitted", {"jobs_submitted": 9}), 404, "Dataset not found"
    )
    system = Api(iceprod_server, None)
    system.headers = {"Authorization": f"Bearer {iceprod_server.service_access_token()}"}
    assert_error(system("PUT", path, {"jobs_submitted": 9}), 403, "authorization failed")


def test_hard_reset_and_truncate(alice: Api, admin: Api) -> None:
    dataset_id = _create(alice)
    alice.ok("PUT", f"/datasets/{dataset_id}/status", {"status": "complete"})
    assert_error(
        alice("POST", f"/datasets/{dataset_id}/dataset_actions/truncate"),
        400,
        "Cannot truncate complete dataset",
    )
    assert alice.ok("POST", f"/datasets/{dataset_id}/dataset_actions/hard_reset") == {}
    assert alice.ok("GET", f"/datasets/{dataset_id}")["status"] == "processing"
    assert alice.ok("POST", f"/datasets/{dataset_id}/dataset_actions/truncate") == {}
    doc = alice.ok("GET", f"/datasets/{dataset_id}")
    assert doc["truncated"] is True and doc["status"] == "processing"
    assert_error(admin("POST", "/datasets/abc/dataset_actions/hard_reset"), 404, "Dataset not found")
    assert_error(admin("POST", "/datasets/abc/dataset_actions/truncate"), 404, "Dataset not found")


# ------------------------------------------------------------------ config (§4.2)


def test_config_put_and_get(alice: Api, admin: Api) -> None:
    dataset_id = _create(alice)
    assert_error(alice("GET", f"/config/{dataset_id}"), 404, "Config not found")
    assert alice.ok("PUT", f"/config/{dataset_id}", TWO_TASK_CONFIG) == {}
    assert alice.ok("GET", f"/config/{dataset_id}") == TWO_TASK_CONFIG  # the raw body, no dataset_id
    body = dict(TWO_TASK_CONFIG, dataset_id="ffff")
    assert_error(alice("PUT", f"/config/{dataset_id}", body), 400, "dataset_id mismatch")
    assert alice.ok("PUT", f"/config/{dataset_id}", dict(TWO_TASK_CONFIG, dataset_id=dataset_id)) == {}
    assert_error(
        Api(alice.server, "bob")("PUT", f"/config/{dataset_id}", TWO_TASK_CONFIG), 403, "authorization failed"
    )


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (
            {"version": 3.2, "tasks": [{"name": "t", "trays": []}]},
            "Validation error in config['tasks'][0]['trays']: [] should be non-empty",
        ),
        (
            {"version": 3.2, "tasks": [{"name": "t", "trays": [{"bogus": 1, "modules": [{"src": "x"}]}]}]},
            "Validation error in config['tasks'][0]['trays'][0]: "
            "Additional properties are not allowed ('bogus' was unexpected)",
        ),
    ],
)
def test_config_validation(alice: Api, config: dict, reason: str) -> None:
    dataset_id = _create(alice)
    assert_error(alice("PUT", f"/config/{dataset_id}", config), 400, reason)
    assert_error(alice("GET", f"/config/{dataset_id}"), 404, "Config not found")


def test_config_for_unknown_dataset(alice: Api, admin: Api) -> None:
    assert_error(alice("PUT", "/config/abc", TWO_TASK_CONFIG), 403, "attr not found")
    assert admin.ok("PUT", "/config/abc", TWO_TASK_CONFIG) == {}  # IceProd does not check existence
    assert admin.ok("GET", "/config/abc")["tasks"][0]["name"] == "generate"


def test_json_encoding_of_responses(alice: Api) -> None:
    dataset_id = _create(alice, description="</script>")
    resp = alice("GET", f"/datasets/{dataset_id}")
    assert resp.headers["Content-Type"] == "application/json; charset=UTF-8"
    assert json.loads(resp.text)["description"] == "</script>"
