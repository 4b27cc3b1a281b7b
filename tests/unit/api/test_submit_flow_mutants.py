"""Submitting exactly once, found weak by `make mutation` (mutmut on api/submit_flow.py).

The flow is sans-IO: these tests drive it step by step with IceProd's answers (as JSON, parsed by
each call's own parser) and a clock that moves only when the flow sleeps, so every wait and grace
period is exact. What they check is what a user sees: which requests go out (a submit is never sent
twice), which dataset the task reattaches to, and the text of the errors (IceProd's own kept). The
same flows over real HTTP against the stand-in are in ``tests/unit/hooks/test_iceprod_submit.py``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_iceprod.api import submit_flow
from airflow_provider_iceprod.api.calls import Call
from airflow_provider_iceprod.api.checks import check_submit
from airflow_provider_iceprod.api.flows import FlowContext, NeedIdentity, Run, Sleep
from airflow_provider_iceprod.exceptions import (
    IceProdActionError,
    IceProdAmbiguousError,
    IceProdNotFoundError,
    IceProdTransientError,
    IceProdUncertainError,
)
from airflow_provider_iceprod.models import Identity, SubmitResult

CONFIG = {"version": 3.2, "tasks": [{"name": "a", "trays": [{"modules": [{"src": "/bin/true"}]}]}]}
MARKER = "dag.run.task.0"
TAG = f"[airflow:{MARKER}]"
D1, D2, D3 = (f"{n:032x}" for n in (0xA1, 0xA2, 0xA3))


class Clock:
    """time.time and time.monotonic for the flow: they move only when the flow sleeps."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, now: float = 1_000_000.0) -> None:
        self.now = now
        monkeypatch.setattr(submit_flow.time, "time", lambda: self.now)
        monkeypatch.setattr(submit_flow.time, "monotonic", lambda: self.now)
        from airflow_provider_iceprod.api import flows

        monkeypatch.setattr(flows.time, "monotonic", lambda: self.now)


class IceProd:
    """IceProd's answers: datasets (id -> doc), the submit queue, configs, and what was sent."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.datasets: dict[str, dict[str, Any]] = {}
        self.configs: set[str] = set()
        self.pending: list[int] = [0]  # answers of GET /actions/submit, the last one repeats
        self.statuses: list[dict[str, Any]] = []  # answers of GET /actions/submit/<id>, the last repeats
        self.fail: dict[tuple[str, str], list[BaseException]] = {}  # (method, path) -> errors, in turn
        self.sent: list[tuple[str, str]] = []
        self.sleeps: list[float] = []
        self.bodies: list[Any] = []
        self.on_submit: Callable[[], None] | None = None

    def add(
        self, dataset_id: str, number: int, description: str, config: bool = True, username: str = "alice"
    ) -> None:
        self.datasets[dataset_id] = {
            "dataset_id": dataset_id,
            "dataset": number,
            "description": description,
            "username": username,
        }
        if config:
            self.configs.add(dataset_id)

    def answer(self, call: Call) -> Any:
        key = (call.method, call.path)
        self.sent.append(key)
        self.bodies.append(call.json)
        if self.fail.get(key):
            raise self.fail[key].pop(0)
        if key == ("GET", "/datasets"):  # like IceProd: ?users= filters, without it every dataset
            users = (call.params or {}).get("users")
            return {d: dict(doc) for d, doc in self.datasets.items() if users in (None, doc["username"])}
        if call.method == "GET" and call.path.startswith("/datasets/"):
            return self.datasets[call.path.split("/")[2]]
        if call.path.startswith("/config/"):
            dataset_id = call.path.split("/")[2]
            if call.method == "PUT":
                self.configs.add(dataset_id)
                return None
            if dataset_id not in self.configs:
                raise IceProdNotFoundError("config not found", path=call.path)
            return {"tasks": []}
        if key == ("POST", "/datasets"):
            self.add(D3, 30, call.json["description"], config=False)
            return {"result": D3}
        if key == ("POST", "/actions/submit"):
            if self.on_submit is not None:
                self.on_submit()
            return {"result": "req1"}
        if key == ("GET", "/actions/submit"):
            count = self.pending.pop(0) if len(self.pending) > 1 else self.pending[0]
            return {"queued": count, "complete": 5}
        if call.method == "GET" and call.path.startswith("/actions/submit/"):
            doc = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            return {"id": call.path.rsplit("/", 1)[1], **doc}
        if key == ("POST", "/actions/materialization"):
            return {"result": "mat1"}
        raise AssertionError(f"unexpected call {key}")

    def drive(self, flow: Any, username: str = "alice") -> Any:
        with Run(flow) as run:
            for n, step in enumerate(run):
                if n > 10_000:  # a flow that never ends: fail now, not at a CPU time limit
                    raise AssertionError("the flow does not end")
                if isinstance(step, NeedIdentity):
                    run.send(Identity(username=username, groups=()))
                elif isinstance(step, Sleep):
                    self.sleeps.append(step.seconds)
                    self.clock.now += step.seconds
                else:
                    try:
                        run.send(step.parse(self.answer(step)))
                    except Exception as exc:  # an IceProd error, raised where the flow yielded
                        run.throw(exc)
            return run.result

    def submits(self) -> int:
        return self.sent.count(("POST", "/actions/submit")) + self.sent.count(("POST", "/datasets"))


@pytest.fixture
def ip(monkeypatch: pytest.MonkeyPatch) -> IceProd:
    return IceProd(Clock(monkeypatch))


def _req(**changes: Any) -> Any:
    options: dict[str, Any] = {"description": "my data", "jobs_submitted": 2, "marker": MARKER}
    options.update(changes)
    return check_submit(CONFIG, **options)


def _ctx() -> FlowContext:
    return FlowContext(
        poll_interval=5.0, dataset_url=lambda dataset_id: f"https://iceprod/dataset/{dataset_id}"
    )


def _ambiguous() -> IceProdAmbiguousError:
    return IceProdAmbiguousError(
        "Connection reset by peer", status_code=None, method="POST", path="/actions/submit"
    )


# -- the marker look-up ---------------------------------------------------------------------------


def test_the_marker_lookup_lists_only_the_callers_datasets_and_the_fields_it_needs() -> None:
    call = submit_flow.marker_lookup("alice")
    assert (call.method, call.path) == ("GET", "/datasets")
    assert call.params == {"users": "alice", "keys": "dataset_id|dataset|description|status"}


def test_find_by_marker_returns_the_oldest_dataset_carrying_it(ip: IceProd, caplog) -> None:
    ip.add(D2, 12, f"second {TAG}")
    ip.add(D1, 9, f"first {TAG} copy")
    ip.add(D3, 3, "[airflow:other.marker]")
    ip.add("b" * 32, 1, f"bob's {TAG}", username="bob")  # another user's: never ours
    with caplog.at_level(logging.WARNING, logger=submit_flow.__name__):
        found = ip.drive(submit_flow.find_dataset_by_marker(MARKER))
    assert found is not None and (found.dataset_id, found.dataset) == (D1, 9)
    assert caplog.messages == [f"2 IceProd datasets carry {TAG} (['{D1}', '{D2}']); using the oldest"]
    assert ip.sent == [("GET", "/datasets"), ("GET", f"/datasets/{D1}")]


def test_find_by_marker_skips_rows_that_are_not_datasets(ip: IceProd) -> None:
    rows = {"a": "not a dict", "b": {"dataset": 1, "description": TAG}, "c": {"dataset_id": D2}}
    assert submit_flow._match_marker(rows, TAG) is None
    assert submit_flow._match_marker({"d": {"dataset_id": D2, "description": TAG}}, TAG) == D2
    assert ip.drive(submit_flow.find_dataset_by_marker(MARKER)) is None
    assert ip.sent == [("GET", "/datasets")]  # nothing found: no GET of a dataset


def test_datasets_are_ordered_by_number_not_by_text(ip: IceProd) -> None:
    rows = {D1: {"dataset_id": D1, "dataset": 10, "description": TAG}}
    rows[D2] = {"dataset_id": D2, "dataset": 9, "description": TAG}
    assert submit_flow._match_marker(rows, TAG) == D2


# -- a fresh submit -------------------------------------------------------------------------------


def test_a_fresh_submit_is_sent_once_waited_for_and_materialized(ip: IceProd) -> None:
    ip.statuses = [
        {"status": "queued"},
        {"status": "processing", "payload": {"progress": 50}},
        {"status": "complete", "payload": {"dataset_id": D1}},
    ]
    ip.on_submit = lambda: ip.add(D1, 41, f"my data {TAG}")
    sent_at: list[float] = []
    request_ids: list[str] = []
    ctx = _ctx()
    flow = submit_flow.submit_dataset(
        _req(materialize=True), ctx, fresh=True, on_request=request_ids.append, on_send=sent_at.append
    )
    result = ip.drive(flow)
    assert result == SubmitResult(
        request_id="req1", dataset_id=D1, dataset=41, url=f"https://iceprod/dataset/{D1}", reattached=False
    )
    assert sent_at == [1_000_000.0] and request_ids == ["req1"]
    assert ctx.number_cache == {41: D1}
    assert ip.sent == [
        ("GET", "/datasets"),
        ("POST", "/actions/submit"),
        ("GET", "/actions/submit/req1"),
        ("GET", "/actions/submit/req1"),
        ("GET", "/actions/submit/req1"),
        ("POST", "/actions/materialization"),
        ("GET", f"/datasets/{D1}"),
    ]
    assert ip.bodies[1] == _req().submit_body()
    assert ip.bodies[5] == {"dataset_id": D1}


def test_a_submit_that_completes_without_a_dataset_is_an_action_error(ip: IceProd) -> None:
    ip.statuses = [{"status": "complete", "payload": {}}]
    with pytest.raises(
        IceProdActionError, match="IceProd submit request req1 completed without a dataset_id"
    ) as e:
        ip.drive(submit_flow.submit_dataset(_req(), _ctx(), fresh=True))
    assert e.value.request_id == "req1"


def test_a_failed_submit_keeps_iceprods_error_text(ip: IceProd) -> None:
    ip.statuses = [{"status": "error", "error_message": "Validation error: bad config"}]
    with pytest.raises(IceProdActionError, match="Validation error: bad config"):
        ip.drive(submit_flow.submit_dataset(_req(), _ctx(), fresh=True))
    assert ip.submits() == 1


def test_on_send_can_stop_the_submit(ip: IceProd) -> None:
    def refuse(at: float) -> None:
        raise RuntimeError("task state store down")

    with pytest.raises(RuntimeError):
        ip.drive(submit_flow.submit_dataset(_req(), _ctx(), fresh=True, on_send=refuse))
    assert ip.submits() == 0


def test_the_owner_named_in_the_submit_fields_is_the_one_looked_up(ip: IceProd) -> None:
    ip.add(D1, 1, TAG, username="bob")
    req = dataclasses.replace(_req(), extra={"username": "bob"})
    result = ip.drive(submit_flow.submit_dataset(req, _ctx(), fresh=True))
    assert result.dataset_id == D1 and result.reattached


def test_the_lookup_asks_for_the_tokens_user(ip: IceProd, monkeypatch: pytest.MonkeyPatch) -> None:
    owners: list[str] = []
    real = submit_flow.marker_lookup
    monkeypatch.setattr(submit_flow, "marker_lookup", lambda owner: owners.append(owner) or real(owner))
    ip.add(D1, 1, TAG, username="carol")
    ip.add(D2, 2, TAG, username="bob")
    ip.drive(submit_flow.submit_dataset(_req(), _ctx(), fresh=True), username="carol")
    bob = dataclasses.replace(_req(), extra={"username": "bob"})
    ip.drive(submit_flow.submit_dataset(bob, _ctx(), fresh=True), username="carol")
    assert owners == ["carol", "bob"]


# -- reattaching ----------------------------------------------------------------------------------


def test_a_dataset_carrying_the_marker_is_reattached_never_submitted_again(ip: IceProd, caplog) -> None:
    ip.add(D1, 7, f"my data {TAG}")
    ctx = _ctx()
    with caplog.at_level(logging.INFO, logger=submit_flow.__name__):
        result = ip.drive(submit_flow.submit_dataset(_req(materialize=True), ctx, fresh=True))
    assert result == SubmitResult(None, D1, 7, f"https://iceprod/dataset/{D1}", reattached=True)
    assert ip.submits() == 0 and ("POST", "/actions/materialization") not in ip.sent
    assert f"IceProd dataset {D1} already carries {TAG}; reattaching instead of submitting" in caplog.messages
    assert ctx.number_cache == {7: D1}


def test_a_low_level_reattach_stores_a_missing_config(ip: IceProd) -> None:
    ip.add(D1, 7, TAG, config=False)
    ip.drive(submit_flow.submit_dataset(_req(low_level=True), _ctx()))
    assert ip.sent == [
        ("GET", "/datasets"),
        ("GET", f"/config/{D1}"),
        ("PUT", f"/config/{D1}"),
        ("GET", f"/datasets/{D1}"),
    ]
    assert ip.bodies[2] == _req().config
    ip.sent.clear()
    ip.drive(submit_flow.submit_dataset(_req(low_level=True), _ctx()))
    assert ("PUT", f"/config/{D1}") not in ip.sent  # stored now: not written again


def test_a_low_level_submit_creates_the_dataset_and_stores_its_config(ip: IceProd) -> None:
    result = ip.drive(submit_flow.submit_dataset(_req(low_level=True), _ctx()))
    assert (result.dataset_id, result.request_id, result.reattached) == (D3, None, False)
    assert ip.sent == [
        ("GET", "/datasets"),
        ("POST", "/datasets"),
        ("PUT", f"/config/{D3}"),
        ("GET", f"/datasets/{D3}"),
    ]
    assert ip.bodies[1] == _req().create_body() and ip.bodies[2] == _req().config


def test_a_known_request_is_resumed_not_resent(ip: IceProd) -> None:
    ip.add(D1, 5, TAG)
    ip.statuses = [{"status": "processing"}, {"status": "complete", "payload": {"dataset_id": D1}}]
    result = ip.drive(submit_flow.submit_dataset(_req(), _ctx(), resume_request_id="req0"))
    assert result == SubmitResult("req0", D1, 5, f"https://iceprod/dataset/{D1}", reattached=True)
    assert ip.sent == [("GET", "/actions/submit/req0")] * 2 + [("GET", f"/datasets/{D1}")]


def test_a_resumed_request_is_polled_with_the_submits_interval_timeout_and_progress(ip: IceProd) -> None:
    from airflow_provider_iceprod.exceptions import IceProdActionTimeoutError

    seen: list[str] = []
    ip.statuses = [{"status": "queued"}, {"status": "processing"}]
    with pytest.raises(IceProdActionTimeoutError, match="still processing after 12 s"):
        ip.drive(
            submit_flow.submit_dataset(
                _req(timeout=12),
                _ctx(),
                resume_request_id="req0",
                on_progress=lambda r: seen.append(r.status),
            )
        )
    assert ip.sleeps == [5.0, 5.0, 2.0] and seen == ["processing"]
    assert ip.submits() == 0


def test_a_resumed_request_that_completed_without_a_dataset_is_an_error(ip: IceProd) -> None:
    ip.statuses = [{"status": "complete", "payload": {}}]
    with pytest.raises(IceProdActionError, match="request req0 completed without a dataset_id"):
        ip.drive(submit_flow.submit_dataset(_req(), _ctx(), resume_request_id="req0"))
    assert ip.submits() == 0


@pytest.mark.parametrize("gone", ["expired", "failed"])
def test_a_resumed_request_that_is_gone_or_failed_falls_back_to_the_marker(
    ip: IceProd, gone: str, caplog
) -> None:
    if gone == "expired":
        ip.fail[("GET", "/actions/submit/req0")] = [IceProdNotFoundError("no such request")]
    else:
        ip.statuses = [{"status": "error", "error_message": "IceProd said no"}]
    ip.add(D1, 5, TAG)
    with caplog.at_level(logging.INFO, logger=submit_flow.__name__):
        result = ip.drive(submit_flow.submit_dataset(_req(), _ctx(), resume_request_id="req0", fresh=True))
    assert (result.dataset_id, result.request_id, result.reattached) == (D1, None, True)
    expected = (
        "IceProd submit request req0 is gone (records expire after ~1 day)"
        if gone == "expired"
        else "Earlier IceProd submit request req0 failed: IceProd said no"
    )
    assert expected in caplog.messages
    assert ip.submits() == 0


# -- an earlier try may have sent the submit --------------------------------------------------------


def test_with_nothing_pending_a_retry_submits_at_once(ip: IceProd) -> None:
    ip.statuses = [{"status": "complete", "payload": {"dataset_id": D1}}]
    ip.on_submit = lambda: ip.add(D1, 1, TAG)
    result = ip.drive(submit_flow.submit_dataset(_req(), _ctx()))
    assert result.dataset_id == D1 and ip.sleeps == []
    assert ip.sent[:3] == [("GET", "/actions/submit"), ("GET", "/datasets"), ("POST", "/actions/submit")]


def test_a_retry_waits_while_a_submit_is_pending_and_reattaches_when_the_marker_shows(
    ip: IceProd, caplog
) -> None:
    ip.pending = [1, 1, 0]
    lookups = 0
    real = ip.answer

    def answer(call: Call) -> Any:
        nonlocal lookups
        if (call.method, call.path) == ("GET", "/datasets"):
            lookups += 1
            if lookups == 2:  # the earlier try's submit lands during the wait
                ip.add(D2, 8, TAG)
        return real(call)

    ip.answer = answer  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger=submit_flow.__name__):
        result = ip.drive(submit_flow.submit_dataset(_req(reconcile_grace=60), _ctx()))
    assert (result.dataset_id, result.reattached) == (D2, True)
    assert ip.submits() == 0 and ip.sleeps == [5.0]
    assert caplog.messages == [
        f"IceProd has 1 submit request(s) queued or processing and no dataset carries {TAG} yet; one may "
        "be an earlier try's: waiting up to 60 s more before submitting"
    ]


def test_a_submit_still_pending_after_the_grace_stops_the_retry_without_sending(ip: IceProd) -> None:
    ip.pending = [2]
    with pytest.raises(IceProdUncertainError) as raised:
        ip.drive(submit_flow.submit_dataset(_req(reconcile_grace=12), _ctx(), sent_at=999_990.0))
    assert ip.submits() == 0
    # the grace counts from when the earlier try sent: 2 s were left, one short sleep
    assert ip.sleeps == [2.0]
    message = str(raised.value)
    assert message.startswith(
        f"A submit with marker {TAG} (sent at 1970-01-12 13:46:30 UTC) may still create a dataset: no "
        "dataset carries the marker after reconcile_grace=12 s, and IceProd still has 2 submit request(s) "
        "queued or processing. It was not sent again (that could create a second dataset). A person must "
        f"check: look for a dataset whose description carries {TAG} "
    )
    assert message.endswith(
        f"check: look for a dataset whose description carries {TAG} (IceProd website, or "
        "IceProdHook.find_dataset_by_marker); clear this task once it exists (the retry reattaches to "
        "it), or once IceProd's queue is empty and none exists (the retry submits). A longer "
        "reconcile_grace waits longer before asking."
    )
    assert raised.value.path == "/actions/submit"


def test_an_unknown_send_time_waits_the_whole_grace(ip: IceProd) -> None:
    ip.pending = [1]
    with pytest.raises(IceProdUncertainError, match=r"\(sent by an earlier try\)"):
        ip.drive(submit_flow.submit_dataset(_req(reconcile_grace=12), _ctx()))
    assert ip.sleeps == [5.0, 5.0, 2.0]
    # a send time past the grace: one look, no wait
    ip.sleeps.clear()
    with pytest.raises(IceProdUncertainError):
        ip.drive(submit_flow.submit_dataset(_req(reconcile_grace=12), _ctx(), sent_at=0.0))
    assert ip.sleeps == []


def test_a_failed_lookup_before_submitting_is_raised_not_guessed(ip: IceProd) -> None:
    ip.fail[("GET", "/actions/submit")] = [IceProdTransientError("503 Service Unavailable")]
    with pytest.raises(IceProdTransientError, match="503"):
        ip.drive(submit_flow.submit_dataset(_req(), _ctx()))
    assert ip.submits() == 0


# -- an ambiguous submit is reconciled, never re-sent -----------------------------------------------


def test_a_lost_answer_is_reconciled_by_the_marker(ip: IceProd, caplog) -> None:
    ip.fail[("POST", "/actions/submit")] = [_ambiguous()]
    ip.pending = [0, 1, 1, 0]  # before the submit; then the lost request shows in the queue
    lookups = 0
    real = ip.answer

    def answer(call: Call) -> Any:
        nonlocal lookups
        if (call.method, call.path) == ("GET", "/datasets"):
            lookups += 1
            if lookups == 3:
                ip.add(D1, 4, TAG)
        return real(call)

    ip.answer = answer  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger=submit_flow.__name__):
        result = ip.drive(submit_flow.submit_dataset(_req(reconcile_grace=60, materialize=True), _ctx()))
    assert (result.dataset_id, result.request_id, result.reattached) == (D1, None, False)
    assert ip.submits() == 1
    assert ip.sent.count(("POST", "/actions/materialization")) == 1
    assert (
        f"IceProd may or may not have acted on the submit (Connection reset by peer); looking for {TAG} for "
        "up to 60 s" in caplog.messages
    )
    assert ("GET", f"/config/{D1}") in ip.sent
    assert not [m for m in caplog.messages if "has no config yet" in m]  # its config was there


def test_a_reconciled_dataset_without_config_yet_is_still_the_result(ip: IceProd, caplog) -> None:
    ip.fail[("POST", "/actions/submit")] = [_ambiguous()]
    ip.on_submit = lambda: ip.add(D1, 4, TAG, config=False)
    real = ip.answer

    def answer(call: Call) -> Any:
        if (call.method, call.path) == ("POST", "/actions/submit"):
            ip.add(D1, 4, TAG, config=False)  # it reached IceProd before the answer was lost
        return real(call)

    ip.answer = answer  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger=submit_flow.__name__):
        result = ip.drive(submit_flow.submit_dataset(_req(reconcile_grace=10), _ctx(), fresh=True))
    assert result.dataset_id == D1 and ip.submits() == 1
    assert ip.sent.count(("GET", f"/config/{D1}")) == 3  # looked for the whole grace: 0, 5, 10 s
    assert f"IceProd dataset {D1} has no config yet; its submit may still be running" in caplog.messages


def test_a_lost_answer_with_an_empty_queue_after_the_grace_created_nothing(ip: IceProd) -> None:
    ip.fail[("POST", "/actions/submit")] = [_ambiguous()]
    with pytest.raises(IceProdAmbiguousError) as raised:
        ip.drive(submit_flow.submit_dataset(_req(reconcile_grace=10), _ctx(), fresh=True))
    assert ip.submits() == 1
    assert ip.sleeps == [5.0, 5.0]  # the whole grace, even though the queue read empty at once
    assert str(raised.value) == (
        f"Connection reset by peer. After 10 s no dataset carries {TAG} and IceProd has nothing queued or "
        "processing that could still create it, so this submit created nothing; it was not re-sent here. "
        "A retry with the same marker checks again before submitting."
    )
    assert (raised.value.method, raised.value.path) == ("POST", "/actions/submit")


def test_a_lost_answer_with_a_busy_queue_asks_a_person(ip: IceProd, caplog) -> None:
    ip.fail[("POST", "/actions/submit")] = [_ambiguous()]
    ip.pending = [0, 3]
    with pytest.raises(IceProdUncertainError) as raised:
        ip.drive(submit_flow.submit_dataset(_req(reconcile_grace=10), _ctx()))
    assert ip.submits() == 1
    assert "(sent at 1970-01-12 13:46:40 UTC)" in str(raised.value)
    assert "its answer was lost (Connection reset by peer), and IceProd still has 3 submit request(s)" in str(
        raised.value
    )


def test_a_failed_lookup_while_reconciling_is_retried(ip: IceProd, caplog) -> None:
    ip.fail[("POST", "/actions/submit")] = [_ambiguous()]
    ip.pending = [0]
    real = ip.answer
    posted = False

    def answer(call: Call) -> Any:
        nonlocal posted
        key = (call.method, call.path)
        if key == ("POST", "/actions/submit"):
            posted = True
        elif posted and key == ("GET", "/datasets") and not ip.datasets:
            ip.add(D1, 2, TAG)
            raise IceProdTransientError("timed out")
        return real(call)

    ip.answer = answer  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger=submit_flow.__name__):
        result = ip.drive(submit_flow.submit_dataset(_req(reconcile_grace=30), _ctx()))
    assert result.dataset_id == D1 and ip.submits() == 1
    assert f"Looking up {TAG} failed (timed out); trying again" in caplog.messages
    assert ip.sleeps == [5.0]


def test_a_queue_unreadable_till_the_end_asks_a_person(ip: IceProd) -> None:
    ip.fail[("POST", "/actions/submit")] = [_ambiguous()]
    ip.pending = [0]
    real = ip.answer
    posted = False

    def answer(call: Call) -> Any:
        nonlocal posted
        if (call.method, call.path) == ("POST", "/actions/submit"):
            posted = True
        elif posted and (call.method, call.path) == ("GET", "/actions/submit"):
            raise IceProdTransientError("503")
        return real(call)

    ip.answer = answer  # type: ignore[method-assign]
    with pytest.raises(IceProdUncertainError, match="and IceProd's submit queue could not be read"):
        ip.drive(submit_flow.submit_dataset(_req(reconcile_grace=10), _ctx()))
    assert ip.submits() == 1


def test_a_low_level_lost_answer_looks_for_the_marker_only(ip: IceProd, caplog) -> None:
    ip.fail[("POST", "/datasets")] = [_ambiguous()]
    with pytest.raises(IceProdAmbiguousError, match="After 10 s no dataset carries"):
        ip.drive(submit_flow.submit_dataset(_req(low_level=True, reconcile_grace=10), _ctx()))
    assert ("GET", "/actions/submit") not in ip.sent and ip.sleeps == [5.0, 5.0]
    # the create reached IceProd: found, its config stored
    ip.sent.clear()
    ip.sleeps.clear()
    ip.fail[("POST", "/datasets")] = [_ambiguous()]
    ip.add(D3, 30, TAG, config=False)
    result = ip.drive(
        submit_flow.submit_dataset(_req(low_level=True, reconcile_grace=10), _ctx(), fresh=True)
    )
    assert result.dataset_id == D3  # reattached before any create
    assert ip.sent.count(("POST", "/datasets")) == 0 and ("PUT", f"/config/{D3}") in ip.sent


def test_a_low_level_create_whose_answer_was_lost_is_found_and_configured(ip: IceProd) -> None:
    real = ip.answer

    def answer(call: Call) -> Any:
        if (call.method, call.path) == ("POST", "/datasets"):
            real(call)  # created ...
            raise _ambiguous()  # ... but the answer was lost
        return real(call)

    ip.answer = answer  # type: ignore[method-assign]
    result = ip.drive(submit_flow.submit_dataset(_req(low_level=True, reconcile_grace=10), _ctx()))
    assert (result.dataset_id, result.reattached) == (D3, False)
    assert ip.sent.count(("POST", "/datasets")) == 1
    assert ("PUT", f"/config/{D3}") in ip.sent


def test_a_transient_failure_while_polling_for_the_marker_is_retried(ip: IceProd, caplog) -> None:
    ip.fail[("GET", "/datasets")] = [IceProdTransientError("reset")]
    ip.add(D1, 1, TAG)
    with caplog.at_level(logging.WARNING, logger=submit_flow.__name__):
        found = ip.drive(submit_flow._wait_for_marker(TAG, "alice", 10.0, _ctx()))
    assert found == D1 and ip.sleeps == [5.0]
    assert caplog.messages == [f"Looking up {TAG} failed (reset); trying again"]


def test_the_marker_is_looked_for_until_the_very_end_of_the_grace(ip: IceProd) -> None:
    assert ip.drive(submit_flow._wait_for_marker(TAG, "alice", 6.0, _ctx())) is None
    assert ip.sleeps == [5.0, 1.0] and ip.sent.count(("GET", "/datasets")) == 3


def test_reconciling_never_takes_another_users_dataset(ip: IceProd) -> None:
    """``?users=`` is the caller: another user's dataset with the same marker (an older one) is not
    this submit's."""
    ip.add("b" * 32, 1, TAG, username="bob")
    ip.fail[("POST", "/datasets")] = [_ambiguous()]
    with pytest.raises(IceProdAmbiguousError, match="After 10 s no dataset carries"):
        ip.drive(submit_flow.submit_dataset(_req(low_level=True, reconcile_grace=10), _ctx()))
    ip.fail[("POST", "/actions/submit")] = [_ambiguous()]
    with pytest.raises(IceProdAmbiguousError, match="After 10 s no dataset carries"):
        ip.drive(submit_flow.submit_dataset(_req(reconcile_grace=10), _ctx()))
    assert ip.drive(submit_flow._wait_for_marker(TAG, "alice", 0.0, _ctx())) is None


@pytest.mark.parametrize(
    ("counts", "pending"),
    [
        ({"queued": 1, "processing": 2, "complete": 5}, 3),
        ({"processing": 2, "error": 1}, 2),
        ({"queued": 1}, 1),
        ({"complete": 9}, 0),
    ],
)
def test_pending_submits_are_the_queued_and_the_processing_ones(
    ip: IceProd, counts: dict[str, int], pending: int
) -> None:
    ip.answer = lambda call: counts  # type: ignore[method-assign]
    assert ip.drive(submit_flow._pending_submits()) == pending


def test_a_new_submit_is_polled_with_its_timeout_and_reports_progress(ip: IceProd) -> None:
    from airflow_provider_iceprod.exceptions import IceProdActionTimeoutError

    seen: list[str] = []
    ip.statuses = [{"status": "queued"}, {"status": "processing"}]
    with pytest.raises(IceProdActionTimeoutError, match="still processing after 12 s"):
        ip.drive(
            submit_flow.submit_dataset(
                _req(timeout=12), _ctx(), fresh=True, on_progress=lambda r: seen.append(r.status)
            )
        )
    assert ip.sleeps == [5.0, 5.0, 2.0] and seen == ["queued", "processing"]
    assert ip.submits() == 1


def test_the_last_waits_of_a_grace_are_the_time_left(ip: IceProd) -> None:
    ip.fail[("POST", "/actions/submit")] = [_ambiguous()]
    with pytest.raises(IceProdAmbiguousError):
        ip.drive(submit_flow.submit_dataset(_req(reconcile_grace=10.5), _ctx(), fresh=True))
    assert ip.sleeps == [5.0, 5.0, 0.5]  # reconciling: the whole grace, to the end
    ip.sleeps.clear()
    ip.pending = [1]
    with pytest.raises(IceProdUncertainError):
        ip.drive(submit_flow.submit_dataset(_req(reconcile_grace=11), _ctx()))
    assert ip.sleeps == [5.0, 5.0, 1.0]  # before a retry's submit: the whole grace too
