"""Fixtures for operator and example-DAG tests. Imported by the ``conftest.py`` of the folders that use them."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from operator_helpers import FAST_EXAMPLES


@pytest.fixture
def fast_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short polls and few jobs for the example DAGs (they read these knobs from the environment)."""
    for key, value in FAST_EXAMPLES.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def later() -> Iterator[Callable[[float, Callable[[], Any]], None]]:
    """Run a callable after a delay in a background thread (joined at teardown)."""
    threads: list[threading.Thread] = []

    def schedule(delay: float, fn: Callable[[], Any]) -> None:
        def run() -> None:
            time.sleep(delay)
            fn()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)

    yield schedule
    for thread in threads:
        thread.join(timeout=10)
