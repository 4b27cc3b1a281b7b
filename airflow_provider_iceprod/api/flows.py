"""Multi-step IceProd work, written once as generators the hook drives sync or async.

Resolving a dataset reference, waiting on an ``/actions/*`` request, the status actions, a dataset's
progress (the submit with reconciliation by marker is in ``submit_flow.py``). The step protocol (what a flow yields and
gets back) is in ``docs/architecture.md``, "The api package".
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from airflow_provider_iceprod.api import calls
from airflow_provider_iceprod.api.calls import Call
from airflow_provider_iceprod.api.checks import (
    dataset_ref,
    finite_number,
    job_count,
    positive_int,
    status_action_body,
)
from airflow_provider_iceprod.exceptions import (
    IceProdActionError,
    IceProdActionTimeoutError,
    IceProdAmbiguousError,
    IceProdError,
    IceProdNotFoundError,
    IceProdTransientError,
    IceProdUncertainError,
)
from airflow_provider_iceprod.models import ActionRequest, Dataset, DatasetProgress, Identity

log = logging.getLogger(__name__)

T = TypeVar("T")
E = TypeVar("E", bound=IceProdError)
OnProgress = Callable[[ActionRequest], None] | None


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class NeedIdentity:
    """Ask the driver who the token belongs to (decoded from the token, no IceProd call)."""


Step = Call | tuple[Call, ...] | Sleep | NeedIdentity
Flow = Generator[Step, Any, T]


@dataclass
class FlowContext:
    """What flows need from the hook besides I/O."""

    poll_interval: float = 5.0
    number_cache: dict[int, str] = field(default_factory=dict)  # dataset number -> id (never changes)
    dataset_url: Callable[[str], str] = lambda dataset_id: dataset_id


class Run(Generic[T]):
    """One flow being driven: iterate for its steps, ``send`` each answer (or ``throw`` the
    IceProd error) before the next; ``result`` holds what the flow returned. A context manager that
    closes the flow."""

    def __init__(self, flow: Flow[T]) -> None:
        self._flow = flow
        self._reply: Any = None
        self._error: BaseException | None = None
        self.result: T

    def __enter__(self) -> Run[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._flow.close()

    def __iter__(self) -> Run[T]:
        return self

    def __next__(self) -> Step:
        reply, error = self._reply, self._error
        self._reply, self._error = None, None
        try:
            return self._flow.throw(error) if error is not None else self._flow.send(reply)
        except StopIteration as done:
            self.result = done.value
            raise StopIteration from None

    def send(self, reply: Any) -> None:
        self._reply = reply

    def throw(self, error: BaseException) -> None:
        self._error = error


def single(call: Call) -> Flow[Any]:
    """A flow of one call (so the drivers only deal with flows)."""
    return (yield call)


# --------------------------------------------------------------------------------------------------
# Dataset references
# --------------------------------------------------------------------------------------------------


def resolve_dataset_id(ref: Any, ctx: FlowContext) -> Flow[str]:
    """A dataset id for a reference. Numbers are global: list ids and numbers only (keys), cache them."""
    parsed = dataset_ref(ref)
    if isinstance(parsed, str):
        return parsed
    if parsed not in ctx.number_cache:
        rows = yield calls.list_datasets(keys=["dataset_id", "dataset"])
        for row in rows.values():
            if isinstance(row, dict) and "dataset" in row and "dataset_id" in row:
                ctx.number_cache[int(row["dataset"])] = str(row["dataset_id"])
    if parsed not in ctx.number_cache:
        raise IceProdNotFoundError(
            f"IceProd has no dataset number {parsed} that this token can read.", path="/datasets"
        )
    return ctx.number_cache[parsed]


def on_dataset(ref: Any, ctx: FlowContext, build: Callable[[str], Call]) -> Flow[Any]:
    """Resolve ``ref``, then send one call built from the dataset id."""
    dataset_id = yield from resolve_dataset_id(ref, ctx)
    return (yield build(dataset_id))


def get_dataset(ref: Any, ctx: FlowContext) -> Flow[Dataset]:
    return (yield from on_dataset(ref, ctx, calls.get_dataset))


def add_jobs(
    ref: Any,
    count: Any,
    ctx: FlowContext,
    *,
    allow_large: bool = False,
    target: int | None = None,
    on_target: Callable[[int], None] | None = None,
) -> Flow[int]:
    """Grow ``jobs_submitted`` by ``count``; returns the new total.

    ``target``: the total an earlier try of the same change computed (it may already be set):
    it is set again instead of adding ``count`` a second time. ``on_target(total)`` is called
    before the PUT (persist it there, so a retry passes it back as ``target``).
    """
    count = job_count(count, "count", allow_large=allow_large)
    dataset = yield from get_dataset(ref, ctx)
    if target is not None:
        if dataset.jobs_submitted >= target:
            log.info(
                "jobs_submitted is already %d (target %d): not adding again", dataset.jobs_submitted, target
            )
            return dataset.jobs_submitted
        total = target
    else:
        total = job_count(dataset.jobs_submitted + count, "jobs_submitted", allow_large=allow_large)
        if on_target is not None:
            on_target(total)
    yield calls.set_jobs_submitted(dataset.dataset_id, total)
    return total


def dataset_progress(ref: Any, ctx: FlowContext) -> Flow[DatasetProgress]:
    """Dataset + job counts + task counts (three calls, concurrent in the async form)."""
    dataset_id = yield from resolve_dataset_id(ref, ctx)
    dataset, jobs, tasks = yield (
        calls.get_dataset(dataset_id),
        calls.job_counts(dataset_id),
        calls.task_counts(dataset_id),
    )
    return DatasetProgress.from_row(dataset.raw, jobs, tasks)


# --------------------------------------------------------------------------------------------------
# /actions/*
# --------------------------------------------------------------------------------------------------


def wait_for_action(
    name: str, request_id: str, ctx: FlowContext, *, timeout: Any = 900.0, on_progress: OnProgress = None
) -> Flow[ActionRequest]:
    """Poll ``/actions/<name>/<id>`` until complete; IceProdActionError on ``error``, with IceProd's text."""
    first = calls.get_action(name, request_id)  # checks name and id before the flow is first driven
    seconds = finite_number(timeout, "timeout", minimum=0)
    deadline = time.monotonic() + seconds
    seen: tuple[str, float | None] | None = None
    while True:
        request: ActionRequest = yield first
        if (request.status, request.progress) != seen:
            seen = (request.status, request.progress)
            progress = f" {request.progress:g}%" if request.progress is not None else ""
            log.info("IceProd %s request %s: %s%s", name, request_id, request.status, progress)
            if on_progress is not None:
                on_progress(request)
        if request.status == "complete":
            return request
        path = f"/actions/{name}/{request_id}"
        if request.status == "error":
            raise IceProdActionError(
                f"IceProd {name} request {request_id} failed: {request.error_message or 'no error message'}",
                iceprod_message=request.error_message or None,
                request_id=request_id,
                path=path,
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise IceProdActionTimeoutError(
                f"IceProd {name} request {request_id} is still {request.status} after {seconds:g} s; "
                "it may still run (look it up by its request id)",
                request_id=request_id,
                path=path,
            )
        yield Sleep(min(ctx.poll_interval, remaining))


def about_request(cls: type[E], exc: IceProdError, message: str) -> E:
    """A ``cls`` error saying ``message`` about the request ``exc`` is about (its status, method,
    path): what a flow raises when it cannot settle an ambiguous answer."""
    return cls(message, status_code=exc.status_code, method=exc.method, path=exc.path)


def run_action(
    name: str,
    body: Mapping[str, Any],
    ctx: FlowContext,
    *,
    wait: bool = True,
    timeout: Any = 900.0,
    on_progress: OnProgress = None,
) -> Flow[ActionRequest]:
    """Post an action; wait for it (or return its first state when ``wait`` is False).

    Only ``materialization`` is deduplicated by IceProd: any other action whose answer is lost
    after it may have reached IceProd is not re-sent (IceProd would record and run it twice), and
    IceProd cannot look a request up without its id, so the flow stops with
    IceProdUncertainError, saying what a person should check.
    """
    sent = time.time()
    try:
        request_id = yield calls.post_action(name, body)
    except IceProdAmbiguousError as exc:
        pending: dict[str, int] | None = None
        with contextlib.suppress(IceProdTransientError):  # only for the message
            pending = yield calls.action_counts(name)
        queue = (
            f"IceProd has {pending.get('queued', 0) + pending.get('processing', 0)} {name} request(s) "
            "queued or processing (everyone's)"
            if pending is not None
            else f"IceProd's {name} queue could not be read"
        )
        what = f"action {body.get('action')!r} " if body.get("action") else ""
        raise about_request(
            IceProdUncertainError,
            exc,
            f"The answer to POST /actions/{name} ({what}on dataset {body.get('dataset_id')}, sent at "
            f"{_when(sent)}) was lost: {exc.message}. IceProd may have recorded the request; it was "
            f"not sent again, because a second request would run twice. {queue}. A person must "
            "check the dataset (IceProd website) and run the action again only if it did not take "
            "effect.",
        ) from exc
    if not wait:
        return (yield calls.get_action(name, request_id))
    return (yield from wait_for_action(name, request_id, ctx, timeout=timeout, on_progress=on_progress))


def status_action(
    name: str,
    ref: Any,
    action: str,
    ctx: FlowContext,
    *,
    initial_status: str | None = None,
    job_ids: Iterable[str] | None = None,
    task_ids: Iterable[str] | None = None,
    wait: bool = True,
    timeout: Any = 900.0,
    on_progress: OnProgress = None,
) -> Flow[ActionRequest]:
    """``/actions/dataset_status|job_status|task_status`` with ``reset``, ``hard_reset`` or ``suspend``."""
    body = status_action_body(name, action, initial_status=initial_status, job_ids=job_ids, task_ids=task_ids)
    body["dataset_id"] = yield from resolve_dataset_id(ref, ctx)
    return (yield from run_action(name, body, ctx, wait=wait, timeout=timeout, on_progress=on_progress))


def materialize(
    ref: Any, ctx: FlowContext, *, num: Any = None, wait: bool = True, timeout: Any = 900.0
) -> Flow[ActionRequest]:
    """``/actions/materialization`` (IceProd deduplicates it)."""
    body: dict[str, Any] = {}
    if num is not None:
        body["num"] = positive_int(num, "num")
    body["dataset_id"] = yield from resolve_dataset_id(ref, ctx)
    return (yield from run_action("materialization", body, ctx, wait=wait, timeout=timeout))


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


# --------------------------------------------------------------------------------------------------
# Identity
# --------------------------------------------------------------------------------------------------


def identity(ctx: FlowContext) -> Flow[Identity]:
    """Who the token belongs to (decoded from the token's claims by the driver)."""
    return (yield NeedIdentity())


def connection_check(ctx: FlowContext) -> Flow[str]:
    """The connection test: who am I, plus one authenticated request (the smallest list there is)."""
    me: Identity = yield NeedIdentity()
    yield calls.list_datasets(users=me.username, status="processing", keys="dataset_id")
    return f"Authenticated as {me.username} ({', '.join(me.groups) or 'no groups'})"
