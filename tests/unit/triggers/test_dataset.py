"""``IceProdDatasetTrigger`` against the stand-in: outcomes, timeouts, serialization, restarts, on_kill."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from airflow.sdk.module_loading import import_string
from wait_helpers import NOT_A_DATASET, ONE_TASK, TWO_TASKS, hook, wait_for_status

from airflow_provider_iceprod.exceptions import IceProdConfigError
from airflow_provider_iceprod.triggers.dataset import IceProdDatasetTrigger
from airflow_provider_iceprod.triggers.poller import active_pollers
from airflow_provider_iceprod.triggers.tracking import Update
from airflow_provider_iceprod.wait_loop import complete_counts

FAST = {"poll_interval": 0.1}


def trigger(dataset_id: str, deadline: float | None = 30.0, **kwargs) -> IceProdDatasetTrigger:
    options = {**FAST, **kwargs.pop("wait_options", {})}
    return IceProdDatasetTrigger(
        dataset_id,
        wait_options=options,
        deadline=None if deadline is None else time.time() + deadline,
        hook_params={"retry_limit": 1, "retry_delay": 0.01},
        **kwargs,
    )


async def events(trig: IceProdDatasetTrigger) -> list[dict]:
    """Every event the trigger yields, until its generator ends (bounded by pytest-timeout)."""
    return [event.payload async for event in trig.run()]


async def in_worker(event: dict) -> dict:
    """What ``execute_complete`` sees: the event with its final counts (fetched in the worker)."""
    done = await asyncio.to_thread(complete_counts, hook(), event)
    assert isinstance(done, dict) and "counts_final" not in done
    return done


async def test_success_with_final_counts(ip):
    ip.grid.task_duration = 0.2
    dataset_id = ip.create_dataset(TWO_TASKS, jobs_submitted=3)
    out = await events(trigger(dataset_id))
    assert len(out) == 1  # exactly one event
    event = await in_worker(out[0])
    assert event["status"] == "success" and event["outcome"] == "success"
    assert event["dataset_id"] == dataset_id
    assert event["progress"]["job_counts"] == {"complete": 3}
    assert event["progress"]["task_counts"] == {"complete": 6}
    assert event["progress"]["dataset"] == ip.dataset(dataset_id)["dataset"]
    assert active_pollers() == []  # the last subscriber left: the poller stopped


async def test_errors_fail(ip):
    ip.grid.fail_task("generate")
    dataset_id = ip.create_dataset(ONE_TASK, jobs_submitted=2)
    (event,) = await events(trigger(dataset_id))
    assert (event["status"], event["outcome"]) == ("failed", "errors")
    assert "'errors'" in event["message"]
    event = await in_worker(event)
    assert (event["status"], event["outcome"]) == ("failed", "errors")
    assert event["progress"]["job_counts"] == {"errors": 2}
    assert "jobs {errors: 2}" in event["message"]  # the message quotes the final counts


async def test_stall_fails_with_failed_task_names(ip, stalled):
    dataset_id = stalled(jobs=2)
    (event,) = await events(trigger(dataset_id, wait_options={"stall_polls": 2}))
    assert (event["status"], event["outcome"]) == ("failed", "stalled")
    assert "Failed tasks: generate (2)." in event["message"]
    assert event["progress"]["task_counts"] == {"failed": 2, "idle": 2}
    assert ip.dataset(dataset_id)["status"] == "processing"  # IceProd itself never says so


@pytest.mark.parametrize(("mode", "status"), [("fail", "failed"), ("timeout", "timeout")])
async def test_suspended_fail_or_timeout(ip, slow, mode, status):
    dataset_id = slow()
    await asyncio.to_thread(hook().suspend_dataset, dataset_id)
    (event,) = await events(trigger(dataset_id, wait_options={"on_suspended": mode}))
    assert (event["status"], event["outcome"]) == (status, "suspended")
    assert "suspended" in event["message"]


async def test_suspended_wait_keeps_waiting_until_resumed(ip):
    ip.grid.task_duration = 0.2
    dataset_id = ip.create_dataset(ONE_TASK, jobs_submitted=2, status="suspended")
    task = asyncio.create_task(events(trigger(dataset_id, wait_options={"on_suspended": "wait"})))
    await asyncio.sleep(0.6)
    assert not task.done()
    await asyncio.to_thread(hook().resume_dataset, dataset_id)
    (event,) = await asyncio.wait_for(task, 20)
    assert event["status"] == "success"


async def test_truncated_dataset_completes_with_its_existing_jobs(monkeypatch):
    from airflow_provider_iceprod.testing import LocalIceProd

    with LocalIceProd(grid_tick=0.02, task_duration=0.1, materialize_interval=None, action_delay=0.02) as ip:
        monkeypatch.setenv("AIRFLOW_CONN_ICEPROD_DEFAULT", ip.airflow_connection_json(username="alice"))
        dataset_id = ip.create_dataset(ONE_TASK, jobs_submitted=10)
        await asyncio.to_thread(hook().materialize, dataset_id, num=3)
        await asyncio.to_thread(hook().truncate_dataset, dataset_id)
        (event,) = await events(trigger(dataset_id))
        event = await in_worker(event)
    assert event["status"] == "success"
    assert event["progress"]["truncated"] is True
    assert event["progress"]["jobs_submitted"] == 10
    assert event["progress"]["job_counts"] == {"complete": 3}


async def test_dataset_the_token_cannot_read(ip):
    other = ip.create_dataset(ONE_TASK, username="bob", group="filtering", auth_groups_read=["filtering"])
    for dataset_id in (other, NOT_A_DATASET):
        (event,) = await events(trigger(dataset_id))
        assert (event["status"], event["outcome"]) == ("failed", "not_visible")
        assert "403" in event["message"] and "cannot be read" in event["message"]


async def test_deadline_gives_a_timeout_event(ip, slow):
    dataset_id = slow()
    started = time.monotonic()
    (event,) = await events(trigger(dataset_id, deadline=3.0))
    assert 2.9 < time.monotonic() - started < 30  # not before the deadline; generous after it
    assert (event["status"], event["dataset_id"]) == ("timeout", dataset_id)
    assert event["progress"]["status"] == "processing"  # the last thing seen


async def test_deadline_in_the_past_times_out_at_once(ip, slow):
    (event,) = await events(trigger(slow(), deadline=-1))
    assert event["status"] == "timeout"


async def test_transient_errors_are_tolerated_then_fatal(ip):
    ip.grid.task_duration = 0.1
    dataset_id = ip.create_dataset(ONE_TASK)
    ip.faults.add(r"GET /datasets$", status=503, times=4)  # retry_limit=1: two polls fail
    (event,) = await events(trigger(dataset_id, wait_options={"tolerate_errors": 2}))
    assert event["status"] == "success"
    ip.faults.add(r"GET /datasets$", status=503)
    (event,) = await events(trigger(dataset_id, wait_options={"tolerate_errors": 1, "on_outage": "fail"}))
    assert (event["status"], event["error_type"]) == ("error", "IceProdTransientError")
    assert "503" in event["message"]


def forget_shared_tokens() -> None:
    """Empty this host's token-state copies (a new host: nothing shared to take over)."""
    import os
    import shutil

    shutil.rmtree(os.environ["AIRFLOW_ICEPROD_STATE_DIR"], ignore_errors=True)


async def test_issuer_blips_during_discovery_count_as_transient_errors(ip):
    """Issue 13 #1: dropped connections at the issuer's discovery are tolerated like any outage."""
    from airflow_provider_iceprod.auth.cache import TOKEN_CACHE
    from airflow_provider_iceprod.auth.oidc import clear_discovery_cache

    ip.grid.task_duration = 0.1
    dataset_id = ip.create_dataset(ONE_TASK)
    TOKEN_CACHE.clear()
    clear_discovery_cache()  # every triggerer start does discovery
    ip.faults.add("openid-configuration", drop=True, times=2)  # retry_limit=1: the first poll fails
    (event,) = await events(trigger(dataset_id, wait_options={"tolerate_errors": 1}))
    assert event["status"] == "success"
    TOKEN_CACHE.clear()
    clear_discovery_cache()
    forget_shared_tokens()  # else the new "triggerer" takes over the stored access token: no discovery
    ip.faults.add("openid-configuration", drop=True)
    (event,) = await events(trigger(dataset_id, wait_options={"tolerate_errors": 0, "on_outage": "fail"}))
    assert (event["status"], event["error_type"]) == ("error", "IceProdTransientError")
    assert "Check the connection's oauth_url" not in event["message"]


async def test_a_long_outage_does_not_end_a_wait_whose_deadline_is_far(ip):
    """Issue 13 #4: IceProd answers 503 for 6 polls in a row (5 minutes and more at the default
    60 s poll interval), more than ``tolerate_errors`` (3): the deferred wait rides it out with
    error-level log lines and ends in success once IceProd is back."""
    ip.grid.task_duration = 0.1
    dataset_id = ip.create_dataset(ONE_TASK)
    ip.faults.add(r"GET /datasets$", status=503, times=12)  # retry_limit=1: 2 requests per poll
    trig = trigger(dataset_id, deadline=120, wait_options={"tolerate_errors": 3})
    lines: list[tuple[str, str]] = []

    class Recorder:
        def __getattr__(self, level: str):
            return lambda msg, *args: lines.append((level, msg % args))

    trig._log = Recorder()  # type: ignore[assignment]  # structlog: not captured by caplog
    (event,) = await events(trig)
    assert event["status"] == "success"
    assert ip.faults._faults[-1].hits == 12
    loud = [text for level, text in lines if level == "error" and "polls in a row" in text]
    assert len(loud) == 3  # failed polls 4, 5 and 6: past the tolerance, still waiting


async def test_a_deadline_still_ends_a_wait_through_an_outage(ip):
    dataset_id = ip.create_dataset(ONE_TASK)
    ip.faults.add(r"GET /datasets$", status=503)
    (event,) = await events(trigger(dataset_id, deadline=1.5, wait_options={"tolerate_errors": 0}))
    assert event["status"] == "timeout"


HOOK_PARAMS = {
    "retry_limit": 3,
    "retry_delay": 2.0,
    "max_delay": 30.0,
    "retry_after_cap": 60.0,
    "timeout": 10.0,
    "poll_interval": 2,
}


def test_serialize_is_plain_and_exact():
    trig = IceProdDatasetTrigger(
        "0123456789abcdef0123456789abcdef",
        "iceprod_prod",
        wait_options={
            "target_states": ["complete"],
            "on_suspended": "wait",
            "stall_polls": 5,
            "poll_interval": 9,
        },
        deadline=1767225600.0,
        hook_params=HOOK_PARAMS,
        cancel_on_kill=True,
        wait_state={"stall_count": 2, "samples": [[1.0, 4.0]], "polls": 7, "error_count": 0},
    )
    classpath, kwargs = trig.serialize()
    assert classpath == "airflow_provider_iceprod.triggers.dataset.IceProdDatasetTrigger"
    assert kwargs == {
        "dataset_id": "0123456789abcdef0123456789abcdef",
        "iceprod_conn_id": "iceprod_prod",
        "wait_options": {
            "target_states": ["complete"],
            "on_suspended": "wait",
            "stall_polls": 5,
            "poll_interval": 9.0,
            "tolerate_errors": 3,
            "on_outage": "wait",
        },
        "deadline": 1767225600.0,
        "hook_params": HOOK_PARAMS,
        "cancel_on_kill": True,
        "wait_state": {
            "stall_count": 2,
            "samples": [[1.0, 4.0]],
            "polls": 7,
            "error_count": 0,
            "eta": [],
            "last_key": "",
            "last_logged": 0.0,
        },
    }
    rebuilt = import_string(classpath)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    # Airflow's own serde accepts it (it raises TypeError on non-plain values)
    from airflow.sdk.serde import deserialize, serialize

    assert deserialize(serialize(kwargs)) == kwargs


@pytest.mark.parametrize(
    "bad",
    [
        {"dataset_id": ""},
        {"deadline": "tomorrow"},
        {"wait_options": {"on_suspended": "ignore"}},
        {"hook_params": {"retry_limit": object()}},
        {"hook_params": [("retry_limit", 3)]},
        {"wait_state": {"stall_count": "many"}},
    ],
)
def test_constructor_rejects_bad_values(bad):
    kwargs = {"dataset_id": "0123456789abcdef0123456789abcdef", **bad}
    with pytest.raises((ValueError, IceProdConfigError)):  # hook_params: the hook's own error
        IceProdDatasetTrigger(**kwargs)


async def test_restart_mid_wait_picks_up_where_it_left_off(ip, stalled):
    """A triggerer restart: serialize, drop the running trigger, rebuild, continue."""
    dataset_id = stalled()
    first = trigger(dataset_id, wait_options={"stall_polls": 4})
    task = asyncio.create_task(events(first))
    while first.state.stall_count < 2:
        await asyncio.sleep(0.02)
    classpath, kwargs = first.serialize()
    task.cancel()  # the triggerer dies; nothing is yielded
    with pytest.raises(asyncio.CancelledError):
        await task
    carried = kwargs["wait_state"]
    assert carried["stall_count"] >= 2

    rebuilt = import_string(classpath)(**kwargs)
    assert rebuilt.deadline == first.deadline  # the same wall-clock deadline, not a new one
    (event,) = await events(rebuilt)
    assert event["outcome"] == "stalled"
    # it needed only the polls that were still missing, not stall_polls new ones
    assert rebuilt.state.stall_count == 4
    assert rebuilt.state.polls - carried["polls"] == 4 - carried["stall_count"]


async def test_no_sync_io_on_the_event_loop(ip, monkeypatch, caplog):
    """The trigger reads the connection through the async path and never blocks the loop.

    A first wait warms the process up (first-use imports compile modules on this test venv, which
    has no bytecode cache); the second, on a fresh poller and hook, must not block for 50 ms.
    """
    from airflow_provider_iceprod.hooks.iceprod import IceProdHook

    def forbidden(*args, **kwargs):
        raise AssertionError("sync connection lookup on the event loop")

    monkeypatch.setattr(IceProdHook, "get_connection", classmethod(forbidden))
    ip.grid.task_duration = 0.1
    (warm,) = await events(trigger(ip.create_dataset(ONE_TASK)))
    assert warm["status"] == "success"
    dataset_id = ip.create_dataset(TWO_TASKS, jobs_submitted=2)
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05
    caplog.set_level(logging.WARNING, logger="asyncio")
    try:
        (event,) = await events(trigger(dataset_id))
    finally:
        loop.set_debug(False)
    assert event["status"] == "success"
    slow = [r.getMessage() for r in caplog.records if r.name == "asyncio" and "took" in r.getMessage()]
    assert not slow


async def test_on_kill_suspends_only_with_cancel_on_kill(ip, slow):
    keep = slow()
    suspend = slow()
    await trigger(keep, cancel_on_kill=False).on_kill()
    trig = trigger(suspend, cancel_on_kill=True)
    await trig.on_kill()
    await trig.on_kill()  # idempotent
    assert ip.dataset(keep)["status"] == "processing"
    await asyncio.to_thread(wait_for_status, ip, suspend, "suspended")
    assert ip.counters.get("POST /actions/dataset_status") == 1


async def test_on_kill_leaves_finished_datasets_alone_and_never_raises(ip, monkeypatch, capsys):
    ip.grid.task_duration = 0.05
    done = ip.create_dataset(ONE_TASK)
    await asyncio.to_thread(wait_for_status, ip, done, "complete")
    await trigger(done, cancel_on_kill=True).on_kill()
    assert ip.dataset(done)["status"] == "complete"
    assert ip.counters.get("POST /actions/dataset_status") == 0
    # an unreachable IceProd: logged, not raised
    monkeypatch.setenv(
        "AIRFLOW_CONN_ICEPROD_DEFAULT", '{"conn_type": "iceprod", "host": "http://127.0.0.1:9"}'
    )
    capsys.readouterr()
    await trigger(done, cancel_on_kill=True).on_kill()
    captured = capsys.readouterr()  # the trigger's logger writes to the console here
    logged = [line for line in (captured.out + captured.err).splitlines() if "Could not suspend" in line]
    assert len(logged) == 1 and done in logged[0]


async def test_a_cancel_that_arrives_with_an_update_ends_the_trigger(ip, slow):
    """Python 3.11's ``asyncio.wait_for`` could swallow such a cancel: the wait then never ended."""
    dataset_id = slow()
    for _ in range(20):
        task = asyncio.create_task(events(trigger(dataset_id, wait_options={"poll_interval": 60})))
        while not active_pollers() or not active_pollers()[0].subscribers:
            await asyncio.sleep(0.01)
        (poller,) = active_pollers()
        await asyncio.sleep(0)
        for sub in poller._subs[dataset_id]:
            sub.put(Update())  # an update in the same pass as the cancel
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
