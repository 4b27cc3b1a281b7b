"""What makes a submit safe to retry, found weak by `make mutation` (mutmut on operators/_resume.py).

The marker (the same for every try of one task instance, different between them), what the task
state store tells a retry (and that its failures never fail the task, except the send time), when a
dataset an earlier try created is kept, and reattaching to / retiring that dataset on the stand-in.
"""

from __future__ import annotations

import hashlib
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from operator_helpers import TaskStateStore
from wait_helpers import hook as fast_hook

from airflow_provider_iceprod.exceptions import IceProdTransientError
from airflow_provider_iceprod.models import DatasetProgress, SubmitResult
from airflow_provider_iceprod.operators import _resume
from airflow_provider_iceprod.operators._resume import (
    DATASET_ID_KEY,
    REQUEST_ID_KEY,
    SENT_AT_KEY,
    SubmitState,
    existing_problem,
    marker_for_context,
    reattach_from_state,
    submit_marker,
    supersede,
)

LOG = logging.getLogger("resume-test")


# -- the marker -----------------------------------------------------------------------------------


def test_the_marker_is_a_short_hash_of_the_task_instance() -> None:
    raw = "\x1f".join(("dag", "run", "task", "3"))
    assert submit_marker("dag", "run", "task", 3) == hashlib.sha256(raw.encode()).hexdigest()[:16]
    unmapped = "\x1f".join(("dag", "run", "task", "-1"))
    assert submit_marker("dag", "run", "task", None) == hashlib.sha256(unmapped.encode()).hexdigest()[:16]
    assert submit_marker("dag", "run", "task", "3") == submit_marker("dag", "run", "task", 3)  # type: ignore[arg-type]
    # every part counts, and parts cannot run into each other
    markers = {
        submit_marker("dag", "run", "task", 0),
        submit_marker("dag", "run", "task", 1),
        submit_marker("dag", "run2", "task", 0),
        submit_marker("dag2", "run", "task", 0),
        submit_marker("dag", "run", "task2", 0),
        submit_marker("da", "grun", "task", 0),
    }
    assert len(markers) == 6


def test_the_marker_of_a_context_uses_its_task_instance() -> None:
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="t", map_index=2)
    assert marker_for_context({"ti": ti}) == submit_marker("d", "r", "t", 2)
    plain = SimpleNamespace(dag_id="d", run_id="r", task_id="t")
    assert marker_for_context({"ti": plain}) == submit_marker("d", "r", "t", None)


# -- the task state store -------------------------------------------------------------------------


def test_values_round_trip_and_empty_ones_are_absent() -> None:
    store = TaskStateStore()
    state = SubmitState({"task_state_store": store}, LOG)
    assert state.available
    state.set(REQUEST_ID_KEY, "req1")
    assert store.data == {REQUEST_ID_KEY: "req1"} and state.get(REQUEST_ID_KEY) == "req1"
    store.data[DATASET_ID_KEY] = ""
    assert state.get(DATASET_ID_KEY) is None
    store.data[DATASET_ID_KEY] = 7  # not a string: not ours
    assert state.get(DATASET_ID_KEY) is None
    state.set_time(SENT_AT_KEY, 5)
    assert store.data[SENT_AT_KEY] == "5.0" and state.get_time(SENT_AT_KEY) == 5.0
    store.data[SENT_AT_KEY] = "yesterday"
    assert state.get_time(SENT_AT_KEY) is None
    assert state.get_time("missing") is None
    state.delete(REQUEST_ID_KEY, SENT_AT_KEY)
    assert store.data == {DATASET_ID_KEY: 7}
    assert state.available  # no read failed


def test_without_a_store_nothing_is_kept_and_nothing_fails() -> None:
    state = SubmitState({}, LOG)
    assert not state.available
    state.set(REQUEST_ID_KEY, "x")
    state.set_time(SENT_AT_KEY, 1.0)
    state.delete(REQUEST_ID_KEY)
    assert state.get(REQUEST_ID_KEY) is None and state.get_time(SENT_AT_KEY) is None


def test_before_airflow_3_3_the_store_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_resume, "AIRFLOW_V_3_3_PLUS", False)
    store = TaskStateStore()
    state = SubmitState({"task_state_store": store}, LOG)
    state.set(REQUEST_ID_KEY, "x")
    assert not state.available and store.data == {}


def test_store_failures_are_warnings_and_a_failed_read_makes_it_unavailable(caplog) -> None:
    store = TaskStateStore(fail="get set delete")
    state = SubmitState({"task_state_store": store}, LOG)
    with caplog.at_level(logging.WARNING, logger="resume-test"):
        state.set(REQUEST_ID_KEY, "x")
        state.delete(REQUEST_ID_KEY, DATASET_ID_KEY)
        assert state.available
        assert state.get(REQUEST_ID_KEY) is None
    assert not state.available
    assert caplog.messages == [
        "Could not write 'iceprod_submit_request_id' to the task state store: store down",
        "Could not delete 'iceprod_submit_request_id' from the task state store: store down",
        "Could not delete 'iceprod_dataset_id' from the task state store: store down",
        "Could not read 'iceprod_submit_request_id' from the task state store: store down",
    ]


def test_a_failed_send_time_write_stops_the_submit_with_a_clear_error() -> None:
    state = SubmitState({"task_state_store": TaskStateStore(fail="set")}, LOG)
    with pytest.raises(IceProdTransientError) as raised:
        state.set_time(SENT_AT_KEY, 1.0)
    assert str(raised.value) == (
        "Could not write 'iceprod_submit_sent_at' to the task state store (store down); nothing was submitted."
    )
    assert isinstance(raised.value.__cause__, OSError)


# -- a dataset an earlier try created -------------------------------------------------------------


def _progress(status: str, **task_counts: int) -> DatasetProgress:
    return DatasetProgress.from_row({"dataset_id": "d", "status": status}, {}, task_counts)


def test_which_existing_datasets_are_kept() -> None:
    check = existing_problem
    assert check(_progress("errors"), target_states=(), starts_suspended=False) == "in status 'errors'"
    assert check(_progress("errors"), target_states=("errors",), starts_suspended=False) is None
    assert check(_progress("suspended"), target_states=(), starts_suspended=False) == "suspended"
    assert check(_progress("suspended"), target_states=(), starts_suspended=True) is None
    assert check(_progress("suspended"), target_states=("suspended",), starts_suspended=False) is None
    assert check(_progress("errors"), target_states=(), starts_suspended=True) == "in status 'errors'"
    stalled = "stalled (failed tasks and nothing waiting, queued or processing)"
    assert check(_progress("processing", failed=1), target_states=(), starts_suspended=False) == stalled
    assert (
        check(_progress("processing", failed=1, queued=1), target_states=(), starts_suspended=False) is None
    )
    assert check(_progress("processing", complete=3), target_states=(), starts_suspended=False) is None
    assert (
        check(_progress("processing", failed=1), target_states=("processing",), starts_suspended=False)
        is None
    )
    assert check(_progress("complete", failed=1), target_states=(), starts_suspended=False) is None


# -- on the stand-in: reattach and supersede ------------------------------------------------------


def test_a_stored_dataset_id_is_reattached_with_the_stored_request(iceprod_connection: Any) -> None:
    ip = iceprod_connection
    dataset_id = ip.create_dataset(description="mine")
    store = TaskStateStore()
    state = SubmitState({"task_state_store": store}, LOG)
    hook = fast_hook()
    assert reattach_from_state(hook, state, LOG) is None  # nothing stored
    store.data[DATASET_ID_KEY] = dataset_id
    number = ip.dataset(dataset_id)["dataset"]
    url = hook.dataset_url(dataset_id)
    assert reattach_from_state(hook, state, LOG) == SubmitResult(
        None, dataset_id, number, url, reattached=True
    )
    store.data[REQUEST_ID_KEY] = "req1"
    assert reattach_from_state(hook, state, LOG) == SubmitResult(
        "req1", dataset_id, number, url, reattached=True
    )


def test_a_stored_dataset_that_is_gone_is_forgotten(iceprod_connection: Any, caplog) -> None:
    missing = "0" * 31 + "9"
    store = TaskStateStore()
    store.data[DATASET_ID_KEY] = missing
    state = SubmitState({"task_state_store": store}, LOG)
    with caplog.at_level(logging.WARNING, logger="resume-test"):
        assert reattach_from_state(fast_hook(), state, LOG) is None
    assert DATASET_ID_KEY not in store.data
    assert caplog.messages[0].startswith(f"The dataset {missing} stored by an earlier try cannot be read (")
    assert caplog.messages[0].endswith("); looking it up by marker.")


def test_supersede_retires_only_this_marker(iceprod_connection: Any, caplog) -> None:
    ip = iceprod_connection
    dataset_id = ip.create_dataset(description="run [airflow:abc] and [airflow:other]")
    hook = fast_hook()
    with caplog.at_level(logging.INFO, logger="resume-test"):
        supersede(hook, dataset_id, "abc", LOG)
    assert ip.dataset(dataset_id)["description"] == "run [airflow-superseded:abc] and [airflow:other]"
    assert caplog.messages == [
        f"Dataset {ip.dataset(dataset_id)['dataset']} is marked superseded in its description."
    ]
    caplog.clear()
    supersede(hook, dataset_id, "abc", LOG)  # already retired: nothing to do
    assert ip.dataset(dataset_id)["description"] == "run [airflow-superseded:abc] and [airflow:other]"
    assert caplog.messages == []
