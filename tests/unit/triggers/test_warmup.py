"""A trigger's first run imports nothing on the event loop: the async path is loaded in a thread.

Checked in a fresh interpreter (a module imported once stays imported) with an audit hook that
records every module loaded by the event loop's thread while the trigger runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from wait_helpers import ONE_TASK

PROBE = textwrap.dedent(
    """
    import asyncio, json, sys, threading, time
    from airflow_provider_iceprod.triggers.dataset import IceProdDatasetTrigger

    on_loop = []
    watching = False
    loop_thread = threading.main_thread()

    def audit(event, args):
        if watching and event == "import" and threading.current_thread() is loop_thread:
            if args[0] not in sys.modules:
                on_loop.append(args[0])

    sys.addaudithook(audit)

    async def main():
        global watching
        watching = True
        trigger = IceProdDatasetTrigger(
            sys.argv[1], wait_options={"poll_interval": 0.2}, deadline=time.time() + 60
        )
        events = [event.payload async for event in trigger.run()]
        watching = False
        return events

    events = asyncio.run(main())
    print(json.dumps({"status": [e["status"] for e in events], "on_loop": on_loop}))
    """
)


def test_the_first_wait_of_a_process_imports_nothing_on_the_event_loop(ip) -> None:
    ip.grid.task_duration = 0.1
    dataset_id = ip.create_dataset(ONE_TASK, jobs_submitted=1, materialize=True)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, dataset_id], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == ["success"]  # the wait really ran: connection, token, list, counts
    assert result["on_loop"] == []  # auth, transport, httpx's backend, Airflow's lookup: all in a thread
