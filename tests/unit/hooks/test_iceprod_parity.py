"""Every public ``x`` / ``ax`` pair of ``IceProdHook`` against the stand-in: same results.

The table :data:`PAIRS` has one entry per pair; a public method without an entry fails
:func:`test_every_public_method_is_in_the_table`. Each form runs on its own hook, so the async form
resolves the connection itself (a blocking lookup on the event loop fails the test).

Self-contained (its own fixtures), so it runs wherever the hook tests live.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from airflow_provider_iceprod.api import checks
from airflow_provider_iceprod.hooks.iceprod import IceProdHook
from airflow_provider_iceprod.testing.server import LocalIceProd

FAST = {"retry_limit": 3, "retry_delay": 0.01, "timeout": 2.0, "poll_interval": 0.05}
CONFIG: dict[str, Any] = {
    "version": 3.2,
    "tasks": [
        {"name": "generate", "trays": [{"modules": [{"src": "/usr/bin/true"}]}]},
        {"name": "process", "depends": ["generate"], "trays": [{"modules": [{"src": "/usr/bin/true"}]}]},
    ],
}


@dataclass
class World:
    """One dataset of alice's: 2 jobs, each a ``generate`` task (complete, with logs and stats) and a
    ``process`` task (running for minutes); one completed materialization request."""

    ip: LocalIceProd
    form: str  # "sync" or "async"
    dataset_id: str
    number: int
    job_id: str
    task_id: str  # a complete "generate" task
    live_task_id: str  # the "process" task of the same job
    marker: str  # in the description: [airflow:<marker>]
    request_id: str  # a completed /actions/materialization request

    def dataset(self) -> dict[str, Any]:
        return self.ip.dataset(self.dataset_id)

    def job(self) -> dict[str, Any]:
        return next(j for j in self.ip.jobs(self.dataset_id) if j["job_id"] == self.job_id)

    def task(self, task_id: str | None = None) -> dict[str, Any]:
        task_id = task_id or self.live_task_id
        return next(t for t in self.ip.tasks(self.dataset_id) if t["task_id"] == task_id)


Args = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True)
class Pair:
    """How to call one pair, and what of its effect both forms must agree on.

    ``fresh``: the call changes IceProd, so each form gets its own dataset and ``view`` must not
    name ids (otherwise both forms read the same dataset while the grid is paused).
    """

    args: Callable[[World], Args]
    view: Callable[[Any, World], Any] = lambda result, world: result
    fresh: bool = False


def _ref(w: World) -> Args:
    return (w.dataset_id,), {}


def _status(result: Any, w: World) -> Any:
    return result.name, result.status, w.dataset()["status"]


def _submit_view(result: Any, w: World) -> Any:
    stored = w.ip.dataset(result.dataset_id)
    return result.reattached, result.url.endswith(result.dataset_id), stored["description"].split(" [")[0]


PAIRS: dict[str, Pair] = {
    # identity and connection
    "whoami": Pair(lambda w: ((), {})),
    "test_connection": Pair(lambda w: ((), {})),
    # reading
    "get_dataset": Pair(lambda w: ((w.number,), {})),
    "resolve_dataset_id": Pair(lambda w: ((str(w.number),), {})),
    "list_datasets": Pair(lambda w: ((), {"users": "alice", "keys": ["dataset_id", "status"]})),
    "dataset_summaries": Pair(lambda w: ((), {})),
    "get_config": Pair(_ref),
    "dataset_progress": Pair(_ref),
    "job_counts": Pair(_ref),
    "task_counts": Pair(_ref),
    "task_counts_by_name": Pair(_ref),
    "task_stats": Pair(_ref),
    "job_summaries": Pair(_ref),
    "task_summaries": Pair(_ref),
    "list_jobs": Pair(lambda w: ((w.dataset_id,), {"status": ["processing"], "job_index": 0})),
    "get_job": Pair(lambda w: ((w.dataset_id, w.job_id), {})),
    "list_tasks": Pair(lambda w: ((w.dataset_id,), {"name": "generate", "keys": ["task_id", "status"]})),
    "get_task": Pair(lambda w: ((w.dataset_id, w.task_id), {})),
    "task_logs": Pair(lambda w: ((w.dataset_id, w.task_id), {"num": 5, "order": "desc"})),
    "find_dataset_by_marker": Pair(lambda w: ((w.marker,), {})),
    "get_action": Pair(lambda w: (("materialization", w.request_id), {})),
    "wait_for_action": Pair(lambda w: (("materialization", w.request_id), {"timeout": 5})),
    # submitting
    "submit": Pair(
        lambda w: (
            (checks.check_submit(CONFIG, description="p", jobs_submitted=1, marker=f"{w.marker}-sub"),),
            {},
        ),
        _submit_view,
        fresh=True,
    ),
    "submit_dataset": Pair(
        lambda w: ((CONFIG,), {"description": "p", "jobs_submitted": 1, "marker": f"{w.marker}-sd"}),
        _submit_view,
        fresh=True,
    ),
    # /actions/*
    "materialize": Pair(lambda w: ((w.number,), {"num": 1}), lambda r, w: (r.name, r.status), fresh=True),
    "suspend_dataset": Pair(_ref, _status, fresh=True),
    "resume_dataset": Pair(_ref, _status, fresh=True),
    "retry_failed_tasks": Pair(_ref, _status, fresh=True),
    "hard_reset_dataset": Pair(_ref, _status, fresh=True),
    "job_status_action": Pair(
        lambda w: ((w.dataset_id, "suspend"), {"job_ids": iter([w.job_id])}),
        lambda r, w: (r.status, w.job()["status"]),
        fresh=True,
    ),
    "task_status_action": Pair(
        lambda w: ((w.dataset_id, "suspend"), {"task_ids": [w.live_task_id]}),
        lambda r, w: (r.status, w.task()["status"]),
        fresh=True,
    ),
    # dataset settings
    "truncate_dataset": Pair(_ref, lambda r, w: (r, w.dataset()["truncated"]), fresh=True),
    "set_priority": Pair(
        lambda w: ((w.dataset_id, "0.7"), {}), lambda r, w: (r, w.dataset()["priority"]), fresh=True
    ),
    "set_description": Pair(
        lambda w: ((w.dataset_id, "renamed"), {}), lambda r, w: (r, w.dataset()["description"]), fresh=True
    ),
    "set_dataset_status": Pair(
        lambda w: ((w.dataset_id, "suspended"), {}), lambda r, w: (r, w.dataset()["status"]), fresh=True
    ),
    "add_jobs": Pair(
        lambda w: ((w.number, 3), {}), lambda r, w: (r, w.dataset()["jobs_submitted"]), fresh=True
    ),
    "set_task_requirements": Pair(
        lambda w: ((w.dataset_id, "process", {"memory": 2, "cpu": 2}), {}),
        lambda r, w: (r, w.task()["requirements"]),
        fresh=True,
    ),
    # jobs and tasks
    "set_job_status": Pair(
        lambda w: ((w.dataset_id, w.job_id, "suspended"), {}), lambda r, w: (r, w.job()["status"]), fresh=True
    ),
    "set_task_status": Pair(
        lambda w: ((w.dataset_id, w.live_task_id, "suspended"), {}),
        lambda r, w: (r, w.task()["status"]),
        fresh=True,
    ),
    "bulk_job_status": Pair(
        lambda w: ((w.dataset_id, "suspended", iter([w.job_id])), {}),
        lambda r, w: (r, w.job()["status"]),
        fresh=True,
    ),
    "bulk_task_status": Pair(
        lambda w: ((w.dataset_id, "suspended", [w.live_task_id]), {}),
        lambda r, w: (r, w.task()["status"]),
        fresh=True,
    ),
    "bulk_job_action": Pair(
        lambda w: ((w.dataset_id, "suspend", [w.job_id]), {}),
        lambda r, w: (r, w.job()["status"]),
        fresh=True,
    ),
    "bulk_task_action": Pair(
        lambda w: ((w.dataset_id, "suspend"), {"task_ids": [w.live_task_id]}),
        lambda r, w: (r, w.task()["status"]),
        fresh=True,
    ),
}
#: Async names that are not ``"a" + name``.
ASYNC_NAMES = {"wait_for_action": "await_action"}
#: Public methods without a twin, and why (each is run by a test below).
SYNC_ONLY = {"dataset_url": "no I/O once the connection is read"}
ASYNC_ONLY = {"aget_settings": "the async form of the `settings` property"}


def _async_name(name: str) -> str:
    return ASYNC_NAMES.get(name, "a" + name)


def _public_methods() -> set[str]:
    names: set[str] = set()
    for klass in IceProdHook.__mro__:
        if klass.__module__.startswith("airflow_provider_iceprod"):
            names |= {n for n, v in vars(klass).items() if not n.startswith("_") and inspect.isfunction(v)}
    return names


def test_every_public_method_is_in_the_table() -> None:
    table = {*PAIRS, *map(_async_name, PAIRS), *SYNC_ONLY, *ASYNC_ONLY}
    assert _public_methods() == table
    for name in PAIRS:
        assert not inspect.iscoroutinefunction(getattr(IceProdHook, name)), name
        assert inspect.iscoroutinefunction(getattr(IceProdHook, _async_name(name))), name


@pytest.fixture(scope="module")
def standin() -> Iterator[LocalIceProd]:
    """One stand-in for the module (each test makes its own datasets): ``generate`` tasks finish
    at once, ``process`` tasks run for minutes; no materialization cron."""
    with (
        LocalIceProd(
            auto_approve_as="alice",
            grid_tick=0.02,
            task_duration={"generate": 0.05, "*": 600},
            materialize_interval=None,
            action_delay=0.02,
        ) as server,
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setenv("AIRFLOW_CONN_ICEPROD_DEFAULT", server.airflow_connection_json(username="alice"))
        yield server


@pytest.fixture
def grid(standin: LocalIceProd) -> Iterator[LocalIceProd]:
    """The module's stand-in, its grid running again after the test."""
    yield standin
    standin.grid.resume()


def _world(ip: LocalIceProd, form: str, marker: str) -> World:
    dataset_id = ip.create_dataset(CONFIG, jobs_submitted=2, description=f"parity [airflow:{marker}]")
    request = IceProdHook(**FAST).materialize(dataset_id, wait=True)  # the jobs, and a request to read
    job_id = min(job["job_id"] for job in ip.jobs(dataset_id))
    tasks = {t["name"]: t["task_id"] for t in ip.tasks(dataset_id) if t["job_id"] == job_id}
    number = ip.dataset(dataset_id)["dataset"]
    world = World(
        ip, form, dataset_id, number, job_id, tasks["generate"], tasks["process"], marker, request.request_id
    )
    deadline = time.monotonic() + 10
    while world.task(world.task_id)["status"] != "complete":
        assert time.monotonic() < deadline, "the stand-in did not run the generate task"
        time.sleep(0.02)
    return world


def _async_hook(monkeypatch: pytest.MonkeyPatch) -> IceProdHook:
    """A hook whose sync connection lookup fails: the async driver must resolve it by itself."""
    hook = IceProdHook(**FAST)

    def no_sync_lookup(conn_id: str) -> None:
        raise AssertionError("sync get_connection called by an async method")

    monkeypatch.setattr(hook, "get_connection", no_sync_lookup)
    return hook


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_sync_and_async_forms_agree(name: str, grid: LocalIceProd, monkeypatch: pytest.MonkeyPatch) -> None:
    pair = PAIRS[name]
    if pair.fresh:
        worlds = {form: _world(grid, form, f"{name}-{form}") for form in ("sync", "async")}
    else:
        shared = _world(grid, "sync", name)
        worlds = {"sync": shared, "async": shared}
        grid.grid.pause()  # both forms must read the same task states

    args, kwargs = pair.args(worlds["sync"])
    sync_view = pair.view(getattr(IceProdHook(**FAST), name)(*args, **kwargs), worlds["sync"])
    args, kwargs = pair.args(worlds["async"])
    method = getattr(_async_hook(monkeypatch), _async_name(name))
    async_view = pair.view(asyncio.run(method(*args, **kwargs)), worlds["async"])

    assert sync_view == async_view
    assert sync_view not in (None, (None,), ())  # the view shows something that could differ


def test_sync_only_and_async_only_methods(standin: LocalIceProd, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset_id = standin.create_dataset(CONFIG)
    hook = IceProdHook(**FAST)
    assert hook.dataset_url(dataset_id.upper()) == f"{standin.website_url}/dataset/{dataset_id}"
    async_hook = _async_hook(monkeypatch)
    settings = asyncio.run(async_hook.aget_settings())
    assert settings.api_url == standin.api_url and async_hook.settings is settings
