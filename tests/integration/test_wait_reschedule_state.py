"""Reschedule mode keeps the stall counter in the task state store, not in the operator object.

Under ``dag.test()`` the same operator object serves every reschedule, so a sensor that never wrote
its state to the store would still remember its counter in memory. In production each reschedule is
a new process with a freshly parsed operator. Here every run of the task gets a deep copy of the
pristine operator, as production does, so only the store can carry the counter from poke to poke.
"""

from __future__ import annotations

import copy

import pytest
from wait_helpers import wait_until


@pytest.fixture
def fresh_operator_per_run(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Hand ``dag.test()``'s task runner a new copy of the task for each run; the copies used."""
    from airflow.sdk.definitions import dag as dag_module

    original = dag_module._run_task
    used: list[object] = []  # kept alive, so their ids stay distinct

    def run_on_a_copy(*, ti, task, **kwargs):
        fresh = copy.deepcopy(task)
        used.append(fresh)
        return original(ti=ti, task=fresh, **kwargs)

    monkeypatch.setattr(dag_module, "_run_task", run_on_a_copy)
    return used


def test_reschedule_carries_the_stall_counter_in_the_task_state_store(
    wait_dags, ip, stalled, fresh_operator_per_run
) -> None:
    dataset_id = stalled()
    wait_until(lambda: ip.task_counts(dataset_id).get("failed", 0) > 0)
    # timeout 20 s: without the store the stall is never confirmed and the task times out instead
    dags = wait_dags(dataset=dataset_id, poke=0.2, timeout=20, stall_polls=3, retries=0)
    ip.reset_counters()
    dag_run = dags.iceprod_test_wait_reschedule.test()
    (ti,) = dag_run.get_task_instances()

    assert ti.state == "failed"
    # a stall, not the timeout: the failed task names are looked up only for a stall
    assert ip.counters.get("GET /datasets/{dataset_id}/task_counts/name_status") == 1
    # one poll per run (no in-poke confirmation: the store exists), each run on its own object
    polls = ip.counters.get("GET /datasets/{dataset_id}/task_counts/status")
    assert polls == 3
    assert len(fresh_operator_per_run) == polls
    assert len({id(op) for op in fresh_operator_per_run}) == polls
