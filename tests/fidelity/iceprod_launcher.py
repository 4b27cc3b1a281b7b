"""Run IceProd 3.2.43's own server code in one process, for the fidelity tier.

Started by ``tests/fidelity/conftest.py`` with the Python of ``.fidelity-venv/`` (IceProd needs 3.12+);
it never imports the provider. It runs, on 127.0.0.1 and free ports:

* IceProd's REST server (``iceprod.rest.server.Server``) and services server
  (``iceprod.services.server.Server``, the ``/actions/*`` routes), both authenticating against the
  stand-in's identity provider (``ISSUER``), as in production with Keycloak;
* the services worker (the loop body of ``iceprod.services.service.main``), always on;
* the scheduled tasks (``iceprod.scheduled_tasks.*.run``), only when told to (``tick``), so tests
  drive IceProd's crons explicitly instead of waiting on wall-clock schedules;
* a small simulated grid using IceProd's pilot routes (``/task_actions/queue``,
  ``/tasks/{id}/task_actions/processing|complete|failed``).

MongoDB is replaced by ``mongomock`` behind a thin asyncio adapter (:class:`MemoryClient`); the
credentials service (it talks to external token issuers) by :class:`MemoryCredentials`.

Control protocol on stdin/stdout, one JSON object per line. First line out:
``{"rest": url, "services": url}``. Commands in, each answered by one line:
``{"cmd": "tick"}``, ``{"cmd": "cron", "name": "job_completion"}``, ``{"cmd": "fail_task", "name": n}``,
``{"cmd": "queue"}`` (the services queue's messages), ``{"cmd": "stop"}``. Stdin closing stops it too.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import socket
import sys
import uuid
from typing import Any

import mongomock

ISSUER = os.environ["FIDELITY_ISSUER"]
SERVICE_SECRET = os.environ["FIDELITY_SERVICE_SECRET"]
BATCH = int(os.environ.get("FIDELITY_MATERIALIZE_BATCH", "100"))
log = logging.getLogger("fidelity-launcher")


# ---------------------------------------------------------------- in-memory MongoDB


class _Cursor:
    def __init__(self, rows: Any) -> None:
        self._it = iter(rows)

    def __aiter__(self) -> _Cursor:
        return self

    async def __anext__(self) -> Any:
        try:
            return next(self._it)
        except StopIteration:
            raise StopAsyncIteration from None

    async def to_list(self, length: int | None = None) -> list[Any]:
        return list(self._it)

    async def close(self) -> None:
        return None


def _nosession(kwargs: dict[str, Any]) -> dict[str, Any]:
    kwargs.pop("session", None)
    return kwargs


def _project(doc: dict[str, Any], projection: Any) -> dict[str, Any]:
    if not projection:
        return doc
    if isinstance(projection, (list, tuple)):
        projection = dict.fromkeys(projection, True)
    keep = [k for k, v in projection.items() if v and k != "_id"]
    out = {k: v for k, v in doc.items() if k in keep or k == "_id"} if keep else dict(doc)
    if projection.get("_id") is False:
        out.pop("_id", None)
    return out


def _match_group(coll: Any, pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``$match`` then ``$group`` with the accumulators mongomock lacks (``$stdDevSamp``)."""
    import statistics

    if len(pipeline) != 2 or "$match" not in pipeline[0] or "$group" not in pipeline[1]:
        raise NotImplementedError(f"pipeline {pipeline!r}")
    match, group = pipeline[0]["$match"], pipeline[1]["$group"]
    rows: dict[Any, list[dict[str, Any]]] = {}
    for doc in coll.find(match):
        key = _field(doc, group["_id"])
        rows.setdefault(key, []).append(doc)
    out = []
    for key, docs in rows.items():
        result: dict[str, Any] = {"_id": key}
        for name, spec in group.items():
            if name == "_id":
                continue
            ((op, arg),) = spec.items()
            values = [v for v in (_field(d, arg) for d in docs) if isinstance(v, (int, float))]
            if op == "$sum":
                result[name] = len(docs) if arg == 1 else sum(values)
            elif op == "$avg":
                result[name] = statistics.fmean(values) if values else None
            elif op == "$stdDevSamp":
                result[name] = statistics.stdev(values) if len(values) > 1 else None
            elif op == "$min":
                result[name] = min(values, default=None)
            elif op == "$max":
                result[name] = max(values, default=None)
            elif op == "$first":
                result[name] = _field(docs[0], arg)
            else:
                raise NotImplementedError(op)
        out.append(result)
    return out


def _field(doc: dict[str, Any], ref: Any) -> Any:
    if not (isinstance(ref, str) and ref.startswith("$")):
        return ref
    value: Any = doc
    for part in ref[1:].split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


class _Collection:
    def __init__(self, coll: Any) -> None:
        self._c = coll

    def find(self, *args: Any, **kwargs: Any) -> _Cursor:
        return _Cursor(self._c.find(*args, **_nosession(kwargs)))

    async def aggregate(self, pipeline: Any, **kwargs: Any) -> _Cursor:
        kwargs.pop("allowDiskUse", None)
        try:
            return _Cursor(self._c.aggregate(pipeline, **_nosession(kwargs)))
        except NotImplementedError:
            return _Cursor(_match_group(self._c, pipeline))

    async def find_one_and_update(
        self,
        filter: Any,
        update: Any,
        projection: Any = None,
        sort: Any = None,
        upsert: bool = False,
        return_document: Any = False,
        **kwargs: Any,
    ) -> Any:
        # mongomock re-runs the filter to return the new document, which misses it when the update
        # changed a filtered field; MongoDB returns the updated document itself.
        _nosession(kwargs)
        old = self._c.find_one(filter, sort=sort)
        if old is None:
            if not upsert:
                return None
            res = self._c.update_one(filter, update, upsert=True, **kwargs)
            return self._c.find_one({"_id": res.upserted_id}, projection) if return_document else None
        self._c.update_one({"_id": old["_id"]}, update, **kwargs)
        if return_document:
            return self._c.find_one({"_id": old["_id"]}, projection)
        return _project(old, projection)

    def with_options(self, *args: Any, **kwargs: Any) -> _Collection:
        return self  # write and read concerns mean nothing to one in-memory store

    async def create_index(self, keys: Any = None, **kwargs: Any) -> Any:
        return self._c.create_index(keys if keys is not None else kwargs.pop("keys"), **kwargs)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._c, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **_nosession(kwargs))

        return call


class _Database:
    def __init__(self, db: Any) -> None:
        self._db = db

    def __getitem__(self, name: str) -> _Collection:
        return _Collection(self._db[name])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name == "command":

            async def command(*args: Any, **kwargs: Any) -> Any:
                return {"ok": 1.0}

            return command
        return _Collection(self._db[name])


class _Session:
    async def __aenter__(self) -> _Session:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    async def with_transaction(self, callback: Any, *args: Any, **kwargs: Any) -> Any:
        return await callback(self)


class MemoryClient:
    """What IceProd uses of ``pymongo.AsyncMongoClient``, over one shared ``mongomock`` store."""

    _shared = mongomock.MongoClient()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._client = self._shared

    def __getitem__(self, name: str) -> _Database:
        return _Database(self._client[name])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Database(self._client[name])

    def start_session(self) -> _Session:
        return _Session()

    async def close(self) -> None:
        return None


# ---------------------------------------------------------------- credentials service


class MemoryCredentials:
    """The part of IceProd's credentials service the actions use: per-dataset token records."""

    def __init__(self) -> None:
        self.datasets: dict[str, list[dict[str, Any]]] = {}

    async def request(self, method: str, path: str, args: Any = None) -> Any:
        parts = path.strip("/").split("/")
        if method == "POST" and parts == ["create"]:
            return {**args, "access_token": uuid.uuid4().hex, "type": "oauth"}
        if parts[0] == "datasets" and parts[2:] == ["credentials"]:
            if method == "GET":
                return copy.deepcopy(self.datasets.get(parts[1], []))
            if method == "POST":
                self.datasets.setdefault(parts[1], []).append(dict(args))
                return {}
            if method == "DELETE":
                self.datasets.pop(parts[1], None)
                return {}
        raise RuntimeError(f"credentials service: unsupported {method} {path}")


# ---------------------------------------------------------------- the process


class Routed:
    """One client for both servers, as production's single API address routes ``/actions/*``."""

    def __init__(self, rest: Any, services: Any) -> None:
        self._rest, self._services = rest, services

    async def request(self, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        client = self._services if path.startswith("/actions/") else self._rest
        return await client.request(method, path, *args, **kwargs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Launcher:
    def __init__(self) -> None:
        self.failures: dict[str, int | None] = {}  # task name -> remaining failures (None: always)
        self.running: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.creds = MemoryCredentials()

    async def start(self) -> dict[str, str]:
        import iceprod.common.mongo as mongo_mod

        mongo_mod.AsyncMongoClient = MemoryClient  # type: ignore[misc,assignment]
        from rest_tools.client import ClientCredentialsAuth

        rest_port, services_port = _free_port(), _free_port()
        self.rest_url = f"http://127.0.0.1:{rest_port}"
        self.services_url = f"http://127.0.0.1:{services_port}"
        common = {
            "HOST": "127.0.0.1",
            "OPENID_URL": ISSUER,
            "DB_URL": "mongodb://memory/iceprod",
            "CI_TESTING": "",
        }
        os.environ.update(common, PORT=str(rest_port))
        from iceprod.rest.server import Server as RestServer

        self.rest = RestServer()
        await self.rest.start()

        os.environ.update(
            PORT=str(services_port),
            ICEPROD_API_ADDRESS=self.rest_url,
            ICEPROD_API_CLIENT_ID="iceprod-service",
            ICEPROD_API_CLIENT_SECRET=SERVICE_SECRET,
            ICEPROD_CRED_ADDRESS="http://127.0.0.1:9",  # never called: replaced below
            ICEPROD_CRED_CLIENT_ID="iceprod-service",
            ICEPROD_CRED_CLIENT_SECRET=SERVICE_SECRET,
        )
        import iceprod.services.server as services_mod

        def client_factory(address: str, **kwargs: Any) -> Any:
            if address == os.environ["ICEPROD_CRED_ADDRESS"]:
                return self.creds
            return ClientCredentialsAuth(address=address, **kwargs)

        services_mod.ClientCredentialsAuth = client_factory  # type: ignore[assignment]
        self.services = services_mod.Server()
        await self.services.start()
        self.api = Routed(
            *(
                ClientCredentialsAuth(
                    address=url, token_url=ISSUER, client_id="iceprod-service", client_secret=SERVICE_SECRET
                )
                for url in (self.rest_url, self.services_url)
            )
        )
        # the worker's actions, built like iceprod.services.service.main builds them
        import pkgutil
        from pathlib import Path

        import iceprod.services.actions as actions_pkg

        self.actions: dict[str, Any] = {}
        queue = self.services.message_queue
        for _, name, _ in pkgutil.iter_modules([str(Path(actions_pkg.__file__).parent)]):
            cls = pkgutil.resolve_name(f"iceprod.services.actions.{name}:Action")
            self.actions[name] = cls(queue=queue, logger=log, api_client=self.api, cred_client=self.creds)
        self.worker = asyncio.create_task(self._worker())
        return {"rest": self.rest_url, "services": self.services_url}

    async def _worker(self) -> None:
        """The loop body of ``iceprod.services.service.main``, without its 5 s idle sleep."""
        from iceprod.services.base import TimeoutException

        queue = self.services.message_queue
        while True:
            try:
                await self._work_once(queue, TimeoutException)
            except Exception:
                log.exception("services worker")
                await asyncio.sleep(0.1)

    async def _work_once(self, queue: Any, timeout_exc: type[Exception]) -> None:
        if True:
            data = await queue.pop(timeout_seconds=910)
            if not data:
                await asyncio.sleep(0.02)
                return
            try:
                type_ = data.payload.pop("type")
                await asyncio.wait_for(self.actions[type_].run(data), timeout=900)
            except timeout_exc:
                await queue.release(data.uuid)
            except Exception as exc:
                log.info("service run failed: %s", exc)
                await queue.fail(data.uuid, error_message=str(exc))
            else:
                await queue.complete(data.uuid)

    # ------------------------------------------------------------ crons and grid

    async def cron(self, name: str) -> None:
        from iceprod.scheduled_tasks import (
            buffer_jobs_tasks,
            dataset_cleanup,
            dataset_completion,
            job_completion,
            queue_tasks,
        )

        if name == "buffer_jobs_tasks":
            await buffer_jobs_tasks.run(self.api, num=BATCH, delay=0, debug=False)
        elif name == "queue_tasks":
            config = dict(queue_tasks.default_config)
            await queue_tasks.run(self.api, config=config, debug=False)
        elif name == "job_completion":
            await job_completion.run(self.api, debug=False)
        elif name == "dataset_completion":
            await dataset_completion.run(self.api, debug=False)
        elif name == "dataset_cleanup":
            await dataset_cleanup.run(self.api, debug=False)
        elif name == "grid":
            await self.grid()
        else:
            raise ValueError(f"unknown cron {name!r}")

    async def grid(self) -> None:
        """One grid pass through the pilot's routes: tasks started on the previous pass end (complete, or
        failed per ``fail_task``); every waiting task is queued and starts. So a task runs across one
        cron pass, as real tasks run across many."""
        import requests

        running, self.running = self.running, []
        for task, body in running:
            await self._finish(task, body)
        while True:
            try:
                task = await self.api.request("POST", "/task_actions/queue", {})
            except requests.exceptions.HTTPError as exc:
                if exc.response.status_code == 404:
                    return
                raise
            body = {"instance_id": task["instance_id"], "site": "localhost"}
            await self.api.request("POST", f"/tasks/{task['task_id']}/task_actions/processing", body)
            self.running.append((task, body))

    async def _finish(self, task: dict[str, Any], body: dict[str, Any]) -> None:
        import requests

        left = self.failures.get(task["name"], 0)
        failed = task["name"] in self.failures and (left is None or left > 0)
        if failed and left is not None:
            self.failures[task["name"]] = left - 1
        route = "failed" if failed else "complete"
        try:
            await self.api.request(
                "POST", f"/tasks/{task['task_id']}/task_actions/{route}", dict(body, time_used=1)
            )
        except requests.exceptions.HTTPError as exc:
            if exc.response.status_code not in (
                400,
                404,
            ):  # reset or suspended meanwhile: the pilot is told no
                raise

    async def tick(self) -> None:
        """One pass of the crons in the order a cron schedule would run them."""
        for name in (
            "buffer_jobs_tasks",
            "queue_tasks",
            "grid",
            "job_completion",
            "dataset_completion",
            "dataset_cleanup",
        ):
            await self.cron(name)
        await self.idle()

    async def idle(self) -> None:
        """Wait until the services queue has nothing queued or processing."""
        queue = self.services.message_queue
        for _ in range(250):  # at most 5 s: a run retrying with backoff is left to its own time
            if not await queue.count({"status": {"$in": ["queued", "processing"]}}):
                return
            await asyncio.sleep(0.02)

    async def handle(self, msg: dict[str, Any]) -> Any:
        cmd = msg["cmd"]
        if cmd == "tick":
            await self.idle()
            await self.tick()
            return None
        if cmd == "cron":
            await self.cron(msg["name"])
            return None
        if cmd == "idle":
            await self.idle()
            return None
        if cmd == "stacks":
            for task in asyncio.all_tasks():
                task.print_stack(file=sys.stderr)
            return None
        if cmd == "fail_task":
            self.failures[msg["name"]] = msg.get("times")
            return None
        if cmd == "queue":
            coll = self.services.message_queue.client.db[self.services.message_queue.collection_name]
            rows = await coll.find({}, projection={"_id": False}).to_list()
            return [{k: v for k, v in r.items() if k in ("status", "payload", "error_message")} for r in rows]
        raise ValueError(f"unknown command {cmd!r}")


async def main() -> None:
    logging.basicConfig(level=os.environ.get("FIDELITY_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    launcher = Launcher()
    urls = await launcher.start()
    print(json.dumps(urls), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            break
        msg = json.loads(line)
        if msg.get("cmd") == "stop":
            break
        try:
            out = {"ok": True, "result": await launcher.handle(msg)}
        except Exception as exc:  # answered, not fatal: the test shows it
            log.exception("command failed")
            out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out, default=str), flush=True)
    launcher.worker.cancel()


if __name__ == "__main__":
    asyncio.run(main())
