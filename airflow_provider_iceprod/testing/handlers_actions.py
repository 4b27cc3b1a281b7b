"""The ``/actions/*`` routes of IceProd's services server (``iceprod/services/server.py``)."""

from __future__ import annotations

import json

from airflow_provider_iceprod.testing.actions import ACTION_TYPES, healthz
from airflow_provider_iceprod.testing.handlers_base import BaseHandler, api
from airflow_provider_iceprod.testing.states import ApiError
from airflow_provider_iceprod.testing.store import Caller

ACTIONS_ROLES = ("admin", "system", "user")


class RequestHandler(BaseHandler):
    """``GET /actions/<name>`` (counts) and ``POST /actions/<name>`` (create)."""

    ACTION = ""

    @api(roles=ACTIONS_ROLES)
    def get(self, caller: Caller) -> None:
        self.write_json(self.ctx.actions.counts(self.ACTION))

    @api(roles=ACTIONS_ROLES)
    def post(self, caller: Caller) -> None:
        args = json.loads(self.request.body) if self.request.body else {}
        request_id = self.ctx.actions.create(self.ACTION, args, caller)
        self.set_status(201)
        self.write_json({"result": request_id})


class StatusHandler(BaseHandler):
    """``GET /actions/<name>/{request_id}``: any request id, whatever its type (as in IceProd)."""

    @api(roles=ACTIONS_ROLES)
    def get(self, caller: Caller, request_id: str) -> None:
        record = self.ctx.actions.get(request_id)
        if record is None:
            raise ApiError(404, "Request not found")
        self.write_json(record.public())


class DatasetHandler(BaseHandler):
    """``GET|POST /actions/materialization/datasets/{dataset_id}``."""

    ROUTE = "/actions/materialization/datasets/{dataset_id}"

    @api(roles=ACTIONS_ROLES, acl="read")
    def get(self, caller: Caller, dataset_id: str) -> None:
        record = self.ctx.actions.latest_for_dataset("materialization", dataset_id)
        if record is None:
            raise ApiError(404, "Request not found")
        self.write_json({"id": record.id, "status": record.status})

    @api(roles=ACTIONS_ROLES, acl="write")
    def post(self, caller: Caller, dataset_id: str) -> None:
        args = json.loads(self.request.body) if self.request.body else {}
        args["dataset_id"] = dataset_id
        request_id = self.ctx.actions.create("materialization", args, caller)
        self.set_status(201)
        self.write_json({"result": request_id})


class ActionsHealthHandler(BaseHandler):
    """The services server's ``/healthz`` (only routed when actions have their own base path)."""

    ROUTE = "/healthz"

    def get(self) -> None:
        self.write_json(healthz(self.ctx.actions))


def handlers() -> list[type[BaseHandler]]:
    """One request and one status handler class per action type, plus the materialization extras."""
    out: list[type[BaseHandler]] = []
    for name in ACTION_TYPES:
        out.append(type("RequestHandler", (RequestHandler,), {"ROUTE": f"/actions/{name}", "ACTION": name}))
        out.append(type("StatusHandler", (StatusHandler,), {"ROUTE": f"/actions/{name}/{{request_id}}"}))
    out.append(DatasetHandler)
    return out
