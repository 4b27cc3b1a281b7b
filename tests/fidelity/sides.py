"""The two servers a fidelity scenario runs against, behind one small interface.

``StandIn`` is the project's :class:`~airflow_provider_iceprod.testing.LocalIceProd`; ``RealIceProd`` is
IceProd 3.2.43's own server code run by ``iceprod_launcher.py`` in the Python 3.12 venv. Both
authenticate with tokens of the stand-in's identity provider. A scenario is a function of a side that
returns what it observed (status codes, bodies, states after the crons settle); the test compares the
two records after :func:`normalize` has taken out ids, numbers and times.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
from wait_helpers import wait_until

from airflow_provider_iceprod.testing.server import LocalIceProd

REPO_ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = Path(__file__).with_name("iceprod_launcher.py")
FIDELITY_VENV = Path(os.environ.get("FIDELITY_VENV", REPO_ROOT / ".fidelity-venv"))
BATCH = 2  # jobs per dataset per materialization cron pass, on both sides

_HEX_ID = re.compile(r"\b[0-9a-f]{32}\b")
_TIME_KEYS = {"start_date", "status_changed", "create_date", "timestamp", "locked_at", "created_at"}
_NUM_KEYS = {"dataset", "dataset_num"}


def normalize(value: Any) -> Any:
    """``value`` with 32-hex ids, dataset numbers and times replaced by placeholders, dict keys too."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            nkey = _HEX_ID.sub("<id>", key) if isinstance(key, str) else key
            if key == "config" and isinstance(item, str) and item.startswith("{"):
                item = json.loads(item)  # the same document, whatever the JSON spacing
            if key in _TIME_KEYS:
                item = "<time>"
            elif key in _NUM_KEYS and isinstance(item, int):
                item = "<num>"
            out[nkey] = normalize(item)
        return out
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    if isinstance(value, str):
        return _HEX_ID.sub("<id>", value)
    return value


class Side:
    """One server under test. ``api``/``action`` answer ``(status, body)``; nothing raises on 4xx/5xx."""

    name = "side"
    rest_url = ""
    actions_url = ""

    def __init__(self, standin: LocalIceProd) -> None:
        self.standin = standin
        self._http = httpx.Client(timeout=30)
        self._system_token = ""

    def token(self, who: str = "alice") -> str:
        if who == "system":
            if not self._system_token:
                resp = self._http.post(
                    self.standin.idp.token_endpoint,
                    data={"grant_type": "client_credentials"},
                    auth=("iceprod-service", self.standin.idp.service_client_secret),
                )
                resp.raise_for_status()
                self._system_token = resp.json()["access_token"]
            return self._system_token
        return self.standin.idp.access_token_for(who)

    def _call(self, base: str, method: str, path: str, body: Any, who: str, params: Any) -> tuple[int, Any]:
        resp = self._http.request(
            method,
            base + path,
            json=body,
            params=params,
            headers={"Authorization": f"Bearer {self.token(who)}"},
        )
        try:
            data = resp.json()
        except ValueError:
            data = resp.text
        return resp.status_code, data

    def api(
        self, method: str, path: str, body: Any = None, *, who: str = "alice", params: Any = None
    ) -> tuple[int, Any]:
        return self._call(self.rest_url, method, path, body, who, params)

    def action(self, name: str, body: Any, *, who: str = "alice") -> tuple[int, Any]:
        return self._call(self.actions_url, "POST", f"/actions/{name}", body, who, None)

    def action_done(self, name: str, body: Any, *, who: str = "alice", timeout: float = 20) -> dict[str, Any]:
        """POST an action and poll it until complete or error; the final record (or the 4xx answer)."""
        status, created = self.action(name, body, who=who)
        if status != 201:
            return {"http": status, "body": created}
        request_id = created["result"]
        deadline = time.monotonic() + timeout
        while True:
            _, record = self._call(self.actions_url, "GET", f"/actions/{name}/{request_id}", None, who, None)
            if record.get("status") in ("complete", "error") or time.monotonic() > deadline:
                return record
            time.sleep(0.05)

    def fail_task(self, name: str, times: int | None = None) -> None:
        raise NotImplementedError

    def settle(self) -> None:
        raise NotImplementedError

    def first_jobs(self, dataset_id: str) -> None:
        """Return once the materialization cron has buffered the dataset's first jobs."""
        raise NotImplementedError

    def job_count(self, dataset_id: str) -> int:
        _, jobs = self.api("GET", f"/datasets/{dataset_id}/job_counts/status", who="system")
        return sum(jobs.values())

    def snapshot(self) -> list[dict[str, Any]]:
        """Every dataset (as the system sees them): fields, job and task counts, in creation order."""
        _, found = self.api(
            "GET",
            "/datasets",
            params={
                "keys": "dataset|description|status|jobs_submitted|truncated|username|group|tasks_per_job"
            },
            who="system",
        )
        out = []
        for dataset_id, doc in sorted(found.items(), key=lambda kv: kv[1].get("dataset", 0)):
            _, jobs = self.api("GET", f"/datasets/{dataset_id}/job_counts/status", who="system")
            _, tasks = self.api("GET", f"/datasets/{dataset_id}/task_counts/name_status", who="system")
            doc = {k: v for k, v in doc.items() if k not in ("dataset", "dataset_id")}
            out.append(dict(doc, jobs=jobs, tasks=tasks))
        return out

    def close(self) -> None:
        self._http.close()


class StandIn(Side):
    name = "stand-in"

    def __init__(self, standin: LocalIceProd) -> None:
        super().__init__(standin)
        self.rest_url = self.actions_url = standin.api_url

    def fail_task(self, name: str, times: int | None = None) -> None:
        self.standin.grid.fail_task(name, times=times)

    def settle(self) -> None:
        """Wait until nothing changed for a while (the stand-in's crons run on short timers)."""
        quiet_for = max(0.5, 8 * self.standin.grid_tick)
        last, since, deadline = None, time.monotonic(), time.monotonic() + 30
        while time.monotonic() < deadline:
            now = (self.snapshot(), self.standin.actions.records())
            busy = any(r["status"] in ("queued", "processing") for r in now[1])
            if now != last or busy:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet_for:
                return
            time.sleep(self.standin.grid_tick)

    def first_jobs(self, dataset_id: str) -> None:
        wait_until(lambda: self.job_count(dataset_id) > 0, timeout=30, interval=self.standin.grid_tick)


class RealIceProd(Side):
    name = "iceprod-3.2.43"

    def __init__(self, standin: LocalIceProd) -> None:
        super().__init__(standin)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "FIDELITY_ISSUER": standin.issuer_url,
            "FIDELITY_SERVICE_SECRET": standin.idp.service_client_secret,
            "FIDELITY_MATERIALIZE_BATCH": str(BATCH),
            "FIDELITY_LOG_LEVEL": os.environ.get("FIDELITY_LOG_LEVEL", "CRITICAL"),
        }
        self._proc = subprocess.Popen(
            [str(FIDELITY_VENV / "bin" / "python"), str(LAUNCHER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        line = self._proc.stdout.readline() if self._proc.stdout else ""
        if not line:
            raise RuntimeError("the IceProd launcher exited before it was ready (see stderr)")
        urls = json.loads(line)
        self.rest_url, self.actions_url = urls["rest"], urls["services"]

    def command(self, cmd: str, **args: Any) -> Any:
        assert self._proc.stdin and self._proc.stdout
        self._proc.stdin.write(json.dumps(dict(args, cmd=cmd)) + "\n")
        self._proc.stdin.flush()
        answer = json.loads(self._proc.stdout.readline())
        if not answer["ok"]:
            raise RuntimeError(f"launcher: {answer['error']}")
        return answer["result"]

    def fail_task(self, name: str, times: int | None = None) -> None:
        self.command("fail_task", name=name, times=times)

    def tick(self) -> None:
        self.command("tick")

    def settle(self) -> None:
        """Run cron passes until two in a row change nothing (at most 30)."""
        last = self.snapshot()
        for _ in range(30):
            self.tick()
            now = self.snapshot()
            if now == last:
                return
            last = now

    def first_jobs(self, dataset_id: str) -> None:
        self.command("cron", name="buffer_jobs_tasks")
        if not self.job_count(dataset_id):
            raise AssertionError(f"buffer_jobs_tasks buffered no job of {dataset_id}")

    def queue(self) -> list[dict[str, Any]]:
        return list(self.command("queue"))

    def close(self) -> None:
        super().close()
        try:
            if self._proc.stdin:
                self._proc.stdin.close()
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
