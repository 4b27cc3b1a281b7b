"""Fixtures for hook tests: a hook on the stand-in with fast retries, its token already fetched."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from hook_helpers import CONFIG, FAST

from airflow_provider_iceprod.hooks.iceprod import IceProdHook

if TYPE_CHECKING:
    from airflow_provider_iceprod.testing.server import LocalIceProd


@pytest.fixture
def ip(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalIceProd]:
    """A stand-in whose tasks stay put (long task duration, no materialization cron), so dataset
    states are predictable; ``/actions/*`` run fast. ``iceprod_default`` logs in as alice."""
    from airflow_provider_iceprod.testing.server import LocalIceProd

    with LocalIceProd(
        auto_approve_as="alice",
        grid_tick=0.05,
        task_duration=600,
        materialize_interval=None,
        action_delay=0.02,
    ) as server:
        monkeypatch.setenv("AIRFLOW_CONN_ICEPROD_DEFAULT", server.airflow_connection_json(username="alice"))
        yield server


@pytest.fixture
def hook(ip: LocalIceProd) -> Iterator[IceProdHook]:
    """``iceprod_default`` as alice; the access token is fetched and counters reset before the test."""
    hook = IceProdHook(**FAST)
    hook.token_provider.get_token()
    ip.reset_counters()
    yield hook


@pytest.fixture
def dataset_id(ip: LocalIceProd) -> str:
    """A processing dataset of alice's with jobs and tasks (its tasks stay idle/waiting a while)."""
    dataset_id = ip.create_dataset(CONFIG, jobs_submitted=2, materialize=True, description="fixture dataset")
    ip.reset_counters()
    return dataset_id
