"""Datasets, dataset summaries, config, groups and health routes (``iceprod/rest/handlers/datasets.py``...).

Handler class names are IceProd's, so unexpected errors read ``Error in <HandlerClass>`` as they do there.
"""

from __future__ import annotations

import copy
from types import UnionType
from typing import Any, ClassVar

from airflow_provider_iceprod.testing.handlers_base import BaseHandler, api
from airflow_provider_iceprod.testing.states import (
    DATASET_STATUS,
    ApiError,
    ids_by_status,
    matching,
    moves,
    project,
    split_arg,
)
from airflow_provider_iceprod.testing.store import Caller
from airflow_provider_iceprod.testing.validation import check_config_for_put

GROUP_PRIORITIES = {"admin": 1.0, "simprod": 0.5, "filtering": 0.9, "users": 0.8}


class MultiDatasetHandler(BaseHandler):
    ROUTE = "/datasets"

    @api()
    def get(self, caller: Caller) -> None:
        store = self.ctx.store
        statuses = self.status_arg(DATASET_STATUS, "unknown status")
        groups = split_arg(self.arg("groups"))
        users = split_arg(self.arg("users"))
        keys = self.arg("keys")
        chosen = matching(store.datasets, status=statuses, group=groups, username=users)
        self.write_json(
            {i: project(doc, keys, "dataset_id") for i, doc in chosen if store.can(caller, i, "read")}
        )

    @api()
    def post(self, caller: Caller) -> None:
        data = self.json_body()
        if not isinstance(data, dict):
            raise TypeError("body must be an object")
        dataset_id = self.ctx.store.create_dataset(data, caller, now=self.ctx.clock())
        self.set_status(201)
        self.set_header("Location", f"/datasets/{dataset_id}")
        self.write_json({"result": dataset_id})


class DatasetHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}"

    @api(acl="read")
    def get(self, caller: Caller, dataset_id: str) -> None:
        self.write_json(project(self.ctx.store.dataset(dataset_id), None, "dataset_id"))


def _required(handler: BaseHandler, key: str) -> Any:
    """The body's ``key``, or IceProd's ``400 missing <key>``."""
    data = handler.json_body()
    if key not in data:
        raise ApiError(400, f"missing {key}")
    return data[key]


class _DatasetFieldHandler(BaseHandler):
    """``PUT /datasets/{dataset_id}/<FIELD>``: one type-checked field of the dataset."""

    FIELD: ClassVar[str]
    TYPES: ClassVar[type | UnionType]
    BAD_TYPE: ClassVar[str]

    @api(acl="write")
    def put(self, caller: Caller, dataset_id: str) -> None:
        value = _required(self, self.FIELD)
        if not isinstance(value, self.TYPES):
            raise ApiError(400, self.BAD_TYPE)
        self.ctx.store.dataset(dataset_id)[self.FIELD] = value
        self.write_json({})


class DatasetDescriptionHandler(_DatasetFieldHandler):
    ROUTE = "/datasets/{dataset_id}/description"
    FIELD, TYPES, BAD_TYPE = "description", str, "bad description"


class DatasetPriorityHandler(_DatasetFieldHandler):
    ROUTE = "/datasets/{dataset_id}/priority"
    FIELD, TYPES, BAD_TYPE = "priority", int | float, "priority is not a number"


class DatasetStatusHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/status"

    @api(acl="write")
    def put(self, caller: Caller, dataset_id: str) -> None:
        status = _required(self, "status")
        if status not in DATASET_STATUS:
            raise ApiError(400, "bad status")
        doc = self.ctx.store.dataset(dataset_id)
        if moves(DATASET_STATUS, doc["status"], status):
            doc["status"] = status
        self.write_json({})


class DatasetJobsSubmittedHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/jobs_submitted"

    @api(roles=("admin", "user"), acl="write")
    def put(self, caller: Caller, dataset_id: str) -> None:
        value = _required(self, "jobs_submitted")
        try:
            jobs_submitted = int(value)
        except Exception:
            raise ApiError(400, "jobs_submitted is not an int") from None
        doc = self.ctx.store.dataset(dataset_id)
        if doc["jobs_immutable"]:
            raise ApiError(400, "jobs_submitted is immutable")
        if doc["jobs_submitted"] > jobs_submitted:
            raise ApiError(400, "jobs_submitted must be larger than before")
        if doc.get("tasks_per_job", 0) <= 0:
            raise ApiError(400, "tasks_per_job not valid")
        doc["jobs_submitted"] = jobs_submitted
        doc["tasks_submitted"] = int(jobs_submitted * doc["tasks_per_job"])
        self.write_json({})


class DatasetHardResetHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/dataset_actions/hard_reset"

    @api(acl="write")
    def post(self, caller: Caller, dataset_id: str) -> None:
        self.ctx.store.dataset(dataset_id)["status"] = "processing"
        self.write_json({})


class DatasetTruncateHandler(BaseHandler):
    ROUTE = "/datasets/{dataset_id}/dataset_actions/truncate"

    @api(acl="write")
    def post(self, caller: Caller, dataset_id: str) -> None:
        doc = self.ctx.store.dataset(dataset_id)
        if doc["status"] == "complete":
            raise ApiError(400, "Cannot truncate complete dataset")
        doc["truncated"] = True
        self.write_json({})


class DatasetSummariesStatusHandler(BaseHandler):
    ROUTE = "/dataset_summaries/status"

    @api()
    def get(self, caller: Caller) -> None:
        visible = {doc["dataset_id"]: doc for doc in self.ctx.store.visible_datasets(caller)}
        self.write_json(ids_by_status(DATASET_STATUS, visible))


class ConfigHandler(BaseHandler):
    ROUTE = "/config/{dataset_id}"

    @api(acl="read")
    def get(self, caller: Caller, dataset_id: str) -> None:
        config = self.ctx.store.config(dataset_id)
        self.write_json({k: v for k, v in config.items() if k != "dataset_id"})

    @api(acl="write")
    def put(self, caller: Caller, dataset_id: str) -> None:
        data = self.json_body()
        if "dataset_id" not in data:
            data["dataset_id"] = dataset_id
        elif data["dataset_id"] != dataset_id:
            raise ApiError(400, "dataset_id mismatch")
        check_config_for_put(copy.deepcopy(data))
        self.ctx.store.configs[dataset_id] = data
        self.write_json({})


class GroupsHandler(BaseHandler):
    ROUTE = "/groups"

    @api(roles=("admin", "system"))
    def get(self, caller: Caller) -> None:
        self.write_json({"results": [{"name": k, "priority": v} for k, v in GROUP_PRIORITIES.items()]})


class HealthHandler(BaseHandler):
    ROUTE = "/healthz"

    def get(self) -> None:
        self.write_json({})


HANDLERS: list[type[BaseHandler]] = [
    MultiDatasetHandler,
    DatasetHandler,
    DatasetDescriptionHandler,
    DatasetStatusHandler,
    DatasetPriorityHandler,
    DatasetJobsSubmittedHandler,
    DatasetHardResetHandler,
    DatasetTruncateHandler,
    DatasetSummariesStatusHandler,
    ConfigHandler,
    GroupsHandler,
    HealthHandler,
]
