"""No step of a poller tick grows with the number of waits: the long loops yield in slices."""

from __future__ import annotations

import asyncio

from airflow_provider_iceprod.triggers import poller as poller_module
from airflow_provider_iceprod.triggers.poller import SCAN_EVERY, DatasetPoller, _pick
from airflow_provider_iceprod.triggers.tracking import Tracked


class PassCounter:
    """Counts passes of the event loop while it runs (a callback that reschedules itself)."""

    def __init__(self) -> None:
        self.passes = 0
        self._loop = asyncio.get_running_loop()
        self._on = True
        self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.passes += 1
        if self._on:
            self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._on = False


async def test_matching_ten_thousand_ids_to_the_list_yields_between_slices():
    ids = [f"{n:032x}" for n in range(10_000)]
    listed = {d: {"status": "processing"} for d in ids[::2]}
    counter = PassCounter()
    rows: dict[str, dict] = {}
    missing = await _pick(ids, listed, rows)
    counter.stop()
    assert len(rows) == 5_000 and missing == ids[1::2]
    assert counter.passes >= 10_000 // SCAN_EVERY - 1  # the loop ran between slices


async def test_a_users_filter_computed_while_waits_came_or_went_is_not_cached():
    loop = asyncio.get_running_loop()
    poller = DatasetPoller("iceprod_default", loop)
    ids = {f"{n:032x}" for n in range(3 * SCAN_EVERY)}
    for dataset_id in ids:
        poller._tracked[dataset_id] = Tracked(row={"username": "alice"})
    assert await poller._users_filter(ids) == ["alice"]
    assert poller._users == ["alice"]  # cached

    poller._forget_users()
    computing = asyncio.create_task(poller._users_filter(ids))
    await asyncio.sleep(0)  # it is between two slices now
    poller._forget_users()  # a wait came or went meanwhile
    assert await computing == ["alice"]  # good for this tick's ids
    assert poller._users is None  # but recomputed next tick
    poller_module._forget(poller)
