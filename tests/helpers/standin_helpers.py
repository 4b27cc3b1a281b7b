"""Helpers for the stand-in's own tests: plain HTTP with ``requests``, bounded waits."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import requests

from airflow_provider_iceprod.testing import LocalIceProd

TWO_TASK_CONFIG: dict[str, Any] = {
    "version": 3.2,
    "description": "airflow test",
    "tasks": [
        {
            "name": "generate",
            "requirements": {"cpu": 1, "memory": 2.0},
            "trays": [{"modules": [{"src": "/usr/bin/python3", "args": '-c "print(1)"'}]}],
        },
        {
            "name": "process",
            "depends": ["generate"],
            "trays": [{"modules": [{"src": "/usr/bin/python3", "args": '-c "print(2)"'}]}],
        },
    ],
}


class Api:
    """A tiny HTTP helper bound to one user's access token."""

    def __init__(self, server: LocalIceProd, username: str | None = "alice") -> None:
        self.server = server
        self.headers = {"Authorization": f"Bearer {server.access_token(username)}"} if username else {}
        self.session = requests.Session()

    def __call__(self, method: str, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        data = kwargs.pop("data", None)
        if body is not None:
            data = json.dumps(body)
        return self.session.request(
            method, self.server.api_url + path, data=data, headers=self.headers, timeout=10, **kwargs
        )

    def ok(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        resp = self(method, path, body, **kwargs)
        assert resp.status_code in (200, 201), (resp.status_code, resp.text)
        return resp.json()

    def submit(self, config: dict[str, Any] | None = None, jobs: int = 2, **fields: Any) -> str:
        body = {"config": json.dumps(config or TWO_TASK_CONFIG), "description": "t", "jobs_submitted": jobs}
        body.update(fields)
        request_id = self.ok("POST", "/actions/submit", body)["result"]
        record = wait_for(lambda: self._final(f"/actions/submit/{request_id}"))
        assert record["status"] == "complete", record
        return str(record["payload"]["dataset_id"])

    def _final(self, path: str) -> dict[str, Any] | None:
        record = self.ok("GET", path)
        return record if record["status"] in ("complete", "error") else None

    def close(self) -> None:
        self.session.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def assert_error(resp: requests.Response, code: int, reason: str) -> None:
    """IceProd's error format: the status, the reason phrase, and ``{"code": ..., "error": ...}``."""
    assert (resp.status_code, resp.reason) == (code, reason), (resp.status_code, resp.reason, resp.text)
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json() == {"code": code, "error": reason}


def new_dataset_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "description": "d",
        "jobs_submitted": 2,
        "tasks_submitted": 4,
        "tasks_per_job": 2,
        "group": "users",
    }
    body.update(overrides)
    return body
