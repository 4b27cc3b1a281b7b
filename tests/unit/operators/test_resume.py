"""``SubmitState``: what a retry may conclude from the task state store (no server needed)."""

from __future__ import annotations

import logging

import pytest
from operator_helpers import TaskStateStore

from airflow_provider_iceprod.exceptions import IceProdTransientError
from airflow_provider_iceprod.operators._resume import SENT_AT_KEY, SubmitState

LOG = logging.getLogger(__name__)


def test_a_send_time_round_trips() -> None:
    state = SubmitState({"task_state_store": TaskStateStore()}, LOG)
    assert state.get_time(SENT_AT_KEY) is None and state.available
    state.set_time(SENT_AT_KEY, 1767225600.5)
    assert state.get_time(SENT_AT_KEY) == 1767225600.5


def test_a_failed_read_means_unknown_not_absent() -> None:
    """Issue 13 #2: a store that cannot be read must not let a retry think no submit was sent."""
    state = SubmitState({"task_state_store": TaskStateStore(fail="get")}, LOG)
    assert state.get_time(SENT_AT_KEY) is None
    assert not state.available


def test_a_failed_write_of_the_send_time_stops_the_submit() -> None:
    """Issue 13 #2: the send time is written before the submit; if that fails, nothing is sent."""
    state = SubmitState({"task_state_store": TaskStateStore(fail="set")}, LOG)
    with pytest.raises(IceProdTransientError, match="nothing was submitted"):
        state.set_time(SENT_AT_KEY, 1.0)
