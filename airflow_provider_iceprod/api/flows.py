"""Multi-step IceProd work, written once as generators the hook drives sync or async.

Resolving a dataset reference, waiting on an ``/actions/*`` request, the status actions, a dataset's
progress, and the submit with reconciliation by marker. The step protocol (what a flow yields and
gets back) is in ``docs/architecture.md``, "The api package".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from airflow_provider_iceprod.api import calls
from airflow_provider_iceprod.api.calls import Call
from airflow_provider_iceprod.api.checks import (
    SubmitRequest,
    dataset_ref,
    finite_number,
    marker_tag,
    positive_int,
    status_action_body,
)
from airflow_provider_iceprod.exceptions import (
    IceProdActionError,
    IceProdActionTimeoutError,
    IceProdAmbiguousError,
    IceProdNotFoundError,
    IceProdTransientError,
)
from airflow_provider_iceprod.models import ActionRequest, Dataset, DatasetProgress, Identity, SubmitResult

log = logging.getLogger(__name__)

T = TypeVar("T")
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


def add_jobs(ref: Any, count: Any, ctx: FlowContext) -> Flow[int]:
    """Grow ``jobs_submitted`` by ``count``; returns the new total."""
    count = positive_int(count, "count")
    dataset = yield from get_dataset(ref, ctx)
    total = dataset.jobs_submitted + count
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
    return DatasetProgress(
        dataset_id=dataset.dataset_id,
        dataset=dataset.dataset,
        status=dataset.status,
        truncated=dataset.truncated,
        jobs_submitted=dataset.jobs_submitted,
        tasks_submitted=dataset.tasks_submitted,
        job_counts=jobs,
        task_counts=tasks,
    )


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


def run_action(
    name: str,
    body: Mapping[str, Any],
    ctx: FlowContext,
    *,
    wait: bool = True,
    timeout: Any = 900.0,
    on_progress: OnProgress = None,
) -> Flow[ActionRequest]:
    """Post an action; wait for it (or return its first state when ``wait`` is False)."""
    request_id = yield calls.post_action(name, body)
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


# --------------------------------------------------------------------------------------------------
# Submit, with reconciliation by marker
# --------------------------------------------------------------------------------------------------


def marker_lookup(owner: str) -> Call:
    """The caller's datasets, only the fields the marker lookup needs."""
    return calls.list_datasets(users=owner, keys=["dataset_id", "dataset", "description", "status"])


def _match_marker(rows: Mapping[str, Any], tag: str) -> str | None:
    matches = sorted(
        (int(row.get("dataset", 0)), str(row["dataset_id"]))
        for row in rows.values()
        if isinstance(row, dict) and tag in str(row.get("description", "")) and "dataset_id" in row
    )
    if len(matches) > 1:
        log.warning(
            "%d IceProd datasets carry %s (%s); using the oldest", len(matches), tag, [m[1] for m in matches]
        )
    return matches[0][1] if matches else None


def find_dataset_by_marker(marker: str) -> Flow[Dataset | None]:
    """The caller's dataset whose description carries ``[airflow:<marker>]`` (one lookup, plus a GET)."""
    tag = marker_tag(marker)
    owner = (yield NeedIdentity()).username
    dataset_id = _match_marker((yield marker_lookup(owner)), tag)
    if dataset_id is None:
        return None
    return (yield calls.get_dataset(dataset_id))


def _poll_until(step: Callable[[], Flow[T | None]], grace: float, ctx: FlowContext) -> Flow[T | None]:
    """Run ``step`` until it returns something, for at most ``grace`` seconds."""
    deadline = time.monotonic() + grace
    while True:
        found = yield from step()
        if found is not None:
            return found
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        yield Sleep(min(ctx.poll_interval, remaining))


def _wait_for_marker(tag: str, owner: str, grace: float, ctx: FlowContext) -> Flow[str | None]:
    def look() -> Flow[str | None]:
        try:
            return _match_marker((yield marker_lookup(owner)), tag)
        except IceProdTransientError as exc:
            log.warning("Looking up %s failed (%s); trying again", tag, exc)
            return None

    return (yield from _poll_until(look, grace, ctx))


def _config_stored(dataset_id: str, grace: float, ctx: FlowContext) -> Flow[bool]:
    def look() -> Flow[bool | None]:
        try:
            yield calls.get_config(dataset_id)
            return True
        except IceProdNotFoundError:
            return None

    return bool((yield from _poll_until(look, grace, ctx)))


def _ensure_config(dataset_id: str, config: Mapping[str, Any]) -> Flow[None]:
    """Low-level path: store the config if the dataset has none yet (PUT is idempotent)."""
    try:
        yield calls.get_config(dataset_id)
    except IceProdNotFoundError:
        yield calls.put_config(dataset_id, config)


def submit_dataset(
    req: SubmitRequest,
    ctx: FlowContext,
    *,
    on_request: Callable[[str], None] | None = None,
    on_progress: OnProgress = None,
    resume_request_id: str | None = None,
) -> Flow[SubmitResult]:
    """Submit once: reattach by marker (or a known request id), submit, wait, reconcile if ambiguous."""
    identity: Identity = yield NeedIdentity()
    owner = str(req.extra.get("username") or identity.username)

    # 1. A request this task already sent (its id was persisted through on_request)?
    if resume_request_id is not None:
        result = yield from _resume(req, ctx, resume_request_id, on_progress)
        if result is not None:
            return result

    # 2. A dataset carrying our marker already exists: reattach, never submit twice.
    existing = _match_marker((yield marker_lookup(owner)), req.tag)
    if existing is not None:
        log.info(
            "IceProd dataset %s already carries %s; reattaching instead of submitting", existing, req.tag
        )
        if req.low_level:
            yield from _ensure_config(existing, req.config)
        return (yield from _result(existing, None, ctx, reattached=True))

    # 3. Submit. An ambiguous failure is reconciled by marker, never re-sent.
    request_id: str | None = None
    try:
        if req.low_level:
            dataset_id = yield calls.create_dataset(req.create_body())
            yield calls.put_config(dataset_id, req.config)
        else:
            request_id = yield calls.post_action("submit", req.submit_body(), idempotent=False)
            if on_request is not None:
                on_request(request_id)
            done = yield from wait_for_action(
                "submit", request_id, ctx, timeout=req.timeout, on_progress=on_progress
            )
            dataset_id = _submitted_id(done)
    except IceProdAmbiguousError as exc:
        dataset_id = yield from _reconcile(req, owner, exc, ctx)
    if req.materialize:
        yield calls.post_action("materialization", {"dataset_id": dataset_id})
    return (yield from _result(dataset_id, request_id, ctx, reattached=False))


def _reconcile(req: SubmitRequest, owner: str, exc: IceProdAmbiguousError, ctx: FlowContext) -> Flow[str]:
    """The submit may or may not have happened: look for the marker, never re-send."""
    log.warning(
        "IceProd may or may not have acted on the submit (%s); looking for %s for up to %g s",
        exc,
        req.tag,
        req.reconcile_grace,
    )
    found = yield from _wait_for_marker(req.tag, owner, req.reconcile_grace, ctx)
    if found is None:
        raise IceProdAmbiguousError(
            f"{exc.message}. No dataset carrying {req.tag} appeared within {req.reconcile_grace:g} s, so "
            "probably nothing was created; the submit was not re-sent. A retry with the same marker "
            "looks again before submitting.",
            status_code=exc.status_code,
            method=exc.method,
            path=exc.path,
        ) from exc
    if req.low_level:
        yield from _ensure_config(found, req.config)
    elif not (yield from _config_stored(found, req.reconcile_grace, ctx)):
        log.warning("IceProd dataset %s has no config yet; its submit may still be running", found)
    return found


def _submitted_id(done: ActionRequest) -> str:
    if not done.dataset_id:
        raise IceProdActionError(
            f"IceProd submit request {done.request_id} completed without a dataset_id",
            request_id=done.request_id,
        )
    return done.dataset_id


def _resume(
    req: SubmitRequest, ctx: FlowContext, request_id: str, on_progress: OnProgress
) -> Flow[SubmitResult | None]:
    try:
        request: ActionRequest = yield calls.get_action("submit", request_id)
    except IceProdNotFoundError:
        log.info("IceProd submit request %s is gone (records expire after ~1 day)", request_id)
        return None
    if request.status == "error":
        log.warning("Earlier IceProd submit request %s failed: %s", request_id, request.error_message)
        return None
    done = yield from wait_for_action("submit", request_id, ctx, timeout=req.timeout, on_progress=on_progress)
    return (yield from _result(_submitted_id(done), request_id, ctx, reattached=True))


def _result(
    dataset_id: str, request_id: str | None, ctx: FlowContext, *, reattached: bool
) -> Flow[SubmitResult]:
    dataset: Dataset = yield calls.get_dataset(dataset_id)
    ctx.number_cache[dataset.dataset] = dataset.dataset_id
    return SubmitResult(
        request_id=request_id,
        dataset_id=dataset.dataset_id,
        dataset=dataset.dataset,
        url=ctx.dataset_url(dataset.dataset_id),
        reattached=reattached,
    )


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
