"""Submitting a dataset exactly once: the marker look-up, the submit flow and its reconciliation
(see docs/architecture.md, "Submitting without duplicates"). Sans-IO, driven by the hook like every flow."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from airflow_provider_iceprod.api import calls
from airflow_provider_iceprod.api.calls import Call
from airflow_provider_iceprod.api.checks import (
    SubmitRequest,
    marker_tag,
)
from airflow_provider_iceprod.api.flows import (
    Flow,
    FlowContext,
    NeedIdentity,
    OnProgress,
    Sleep,
    T,
    _when,
    about_request,
    wait_for_action,
)
from airflow_provider_iceprod.exceptions import (
    IceProdActionError,
    IceProdAmbiguousError,
    IceProdNotFoundError,
    IceProdTransientError,
    IceProdUncertainError,
)
from airflow_provider_iceprod.models import ActionRequest, Dataset, Identity, SubmitResult

log = logging.getLogger(__name__)


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
    fresh: bool = False,
    sent_at: float | None = None,
    on_send: Callable[[float], None] | None = None,
) -> Flow[SubmitResult]:
    """Submit once: reattach by marker (or a known request id), submit, wait, reconcile if ambiguous.

    ``fresh``: no earlier try can have sent a submit with this marker (a random marker, or an
    operator's first try with a working task state store); otherwise, before submitting, the flow
    makes sure no submit of IceProd's is still queued or processing (it may be the earlier try's),
    waiting for the marker while there is one. ``sent_at``: when an earlier try sent its submit, if
    known. ``on_send(time)`` is called just before the submit goes out (raise to stop it).
    """
    identity: Identity = yield NeedIdentity()
    owner = str(req.extra.get("username") or identity.username)

    # 1. A request this task already sent (its id was persisted through on_request)?
    if resume_request_id is not None:
        result = yield from _resume(req, ctx, resume_request_id, on_progress)
        if result is not None:
            return result

    # 2. A dataset carrying our marker already exists, or an earlier try's submit may still be
    #    queued: reattach, never submit twice.
    if fresh or req.low_level:
        existing = _match_marker((yield marker_lookup(owner)), req.tag)
    else:
        existing = yield from _wait_for_earlier_submit(req, owner, sent_at, ctx)
    if existing is not None:
        log.info(
            "IceProd dataset %s already carries %s; reattaching instead of submitting", existing, req.tag
        )
        if req.low_level:
            yield from _ensure_config(existing, req.config)
        return (yield from _result(existing, None, ctx, reattached=True))

    # 3. Submit. An ambiguous failure is reconciled by marker, never re-sent.
    request_id: str | None = None
    sent = time.time()
    if on_send is not None:
        on_send(sent)
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
        dataset_id = yield from _reconcile(req, owner, exc, sent, ctx)
    if req.materialize:
        yield calls.post_action("materialization", {"dataset_id": dataset_id})
    return (yield from _result(dataset_id, request_id, ctx, reattached=False))


def _pending_submits() -> Flow[int]:
    """How many submit requests IceProd has queued or processing (everyone's: IceProd cannot list
    requests by user or marker)."""
    counts: dict[str, int] = yield calls.action_counts("submit")
    return counts.get("queued", 0) + counts.get("processing", 0)


def _uncertain(req: SubmitRequest, sent: float | None, why: str, pending: int) -> IceProdUncertainError:
    at = f"sent at {_when(sent)}" if sent is not None else "sent by an earlier try"
    queue = (
        f"IceProd still has {pending} submit request(s) queued or processing"
        if pending > 0
        else "IceProd's submit queue could not be read"
    )
    return IceProdUncertainError(
        f"A submit with marker {req.tag} ({at}) may still create a dataset: {why}, and {queue}. "
        "It was not sent again (that could create a "
        f"second dataset). A person must check: look for a dataset whose description carries {req.tag} "
        "(IceProd website, or IceProdHook.find_dataset_by_marker); clear this task once it exists "
        "(the retry reattaches to it), or once IceProd's queue is empty and none exists (the retry "
        "submits). A longer reconcile_grace waits longer before asking.",
        path="/actions/submit",
    )


def _look_while_pending(
    req: SubmitRequest, owner: str, deadline: float, ctx: FlowContext, *, tolerate: bool = True
) -> Flow[tuple[str | None, int]]:
    """Look for the marker until it shows, IceProd has no submit pending, or ``deadline``.

    The pending count is read before each marker lookup: a submit that was pending is, once the
    count reads zero, either done (its dataset is then found by the lookup after) or failed.
    """
    while True:
        try:
            pending = yield from _pending_submits()
            found = _match_marker((yield marker_lookup(owner)), req.tag)
        except IceProdTransientError as exc:
            if not tolerate:  # before a submit: nothing was sent, the caller may retry later
                raise
            log.warning("Looking up %s failed (%s); trying again", req.tag, exc)
            pending, found = -1, None
        if found is not None or pending == 0:
            return found, pending
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, pending
        if pending > 0:
            log.warning(
                "IceProd has %d submit request(s) queued or processing and no dataset carries %s yet; "
                "one may be an earlier try's: waiting up to %.0f s more before submitting",
                pending,
                req.tag,
                remaining,
            )
        yield Sleep(min(ctx.poll_interval, remaining))


def _wait_for_earlier_submit(
    req: SubmitRequest, owner: str, sent_at: float | None, ctx: FlowContext
) -> Flow[str | None]:
    """Before submitting with a marker an earlier try may have used: the dataset id when the marker
    shows up; None when it is safe to submit; IceProdUncertainError when a submit is still pending
    after ``reconcile_grace`` (counted from ``sent_at`` when known)."""
    grace = req.reconcile_grace
    if sent_at is not None:
        grace = max(0.0, sent_at + grace - time.time())
    deadline = time.monotonic() + grace
    found, pending = yield from _look_while_pending(req, owner, deadline, ctx, tolerate=False)
    if found is not None or pending == 0:
        return found
    why = f"no dataset carries the marker after reconcile_grace={req.reconcile_grace:g} s"
    raise _uncertain(req, sent_at, why, pending)


def _reconcile(
    req: SubmitRequest, owner: str, exc: IceProdAmbiguousError, sent: float, ctx: FlowContext
) -> Flow[str]:
    """The submit may or may not have happened: look for the marker, never re-send."""
    log.warning(
        "IceProd may or may not have acted on the submit (%s); looking for %s for up to %g s",
        exc,
        req.tag,
        req.reconcile_grace,
    )
    if req.low_level:
        # POST /datasets is synchronous: once its dataset is not there, nothing is pending.
        found = yield from _wait_for_marker(req.tag, owner, req.reconcile_grace, ctx)
        pending = 0
    else:
        # Whatever the queue says at first, the request may still be on its way into it: look for
        # the whole grace, and only then take an empty queue as proof that nothing was created.
        deadline = time.monotonic() + req.reconcile_grace
        found, pending = None, -1
        while found is None:
            found, pending = yield from _look_while_pending(req, owner, deadline, ctx)
            if found is not None or time.monotonic() >= deadline:
                break
            yield Sleep(min(ctx.poll_interval, max(0.0, deadline - time.monotonic())))
    if found is None:
        if pending == 0:
            raise about_request(
                IceProdAmbiguousError,
                exc,
                f"{exc.message}. After {req.reconcile_grace:g} s no dataset carries {req.tag} and IceProd has "
                "nothing queued or processing that could still create it, so this submit created "
                "nothing; it was not re-sent here. A retry with the same marker checks again before "
                "submitting.",
            ) from exc
        raise _uncertain(req, sent, f"its answer was lost ({exc.message})", pending) from exc
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
