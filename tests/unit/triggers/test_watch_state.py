"""The watcher's high-water mark: what counts as news, and its compact JSON form."""

from __future__ import annotations

import json

from airflow_provider_iceprod.triggers.watch_state import WatchState


def rows(*pairs: tuple[int, str]) -> list[dict[str, object]]:
    return [{"dataset": n, "status": s} for n, s in pairs]


def test_first_start_history_is_not_news_later_changes_are() -> None:
    state = WatchState()
    assert not state.started
    state.baseline(
        rows((3, "complete"), (5, "processing"), (7, "errors")), ["complete", "errors"], created="t"
    )
    assert state.floor == 7
    assert state.seen(3, "complete") and state.seen(7, "errors")  # history
    assert not state.seen(5, "complete") and not state.seen(5, "errors")  # still running at the start
    assert not state.seen(3, "errors")  # complete is final in IceProd, but a hard reset could do it
    assert not state.seen(8, "complete")  # above the floor: born after the start


def test_each_dataset_and_status_is_news_once() -> None:
    state = WatchState()
    state.baseline(rows((5, "processing")), ["complete", "errors"], created="t")
    for number, status in [(5, "errors"), (9, "complete"), (5, "complete")]:
        assert not state.seen(number, status)
        state.mark(number, status)
        assert state.seen(number, status)
    assert state.seen(5, "errors")  # errors -> processing -> errors again is not a second event


def test_round_trips_through_json_with_compact_ranges() -> None:
    state = WatchState()
    state.baseline(rows(*[(n, "processing") for n in range(1, 1001)]), ["complete"], created="t")
    for n in range(10, 500):
        state.mark(n, "complete")
    stored = json.loads(json.dumps(state.to_dict()))
    assert stored["emitted"]["complete"] == [[10, 499]]
    assert stored["pending"]["complete"] == [[1, 9], [500, 1000]]
    again = WatchState.from_dict(stored)
    assert again == state
    assert len(json.dumps(stored)) < 200


def test_missing_or_unknown_state_starts_fresh() -> None:
    assert not WatchState.from_dict(None).started
    assert not WatchState.from_dict({"v": 99}).started
    assert WatchState.from_dict({"v": 1, "floor": 4}).started
