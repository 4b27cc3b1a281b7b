"""``IceProdHook.get_conn()`` (rest-tools' RestClient on the provider's tokens) and ``run``/``arun``:
in a task and a trigger (``dag.test()``), and in a plain script, against the stand-in.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rest_tools.client import RestClient

from airflow_provider_iceprod.auth.cache import TOKEN_CACHE
from airflow_provider_iceprod.auth.oidc import clear_discovery_cache
from airflow_provider_iceprod.exceptions import IceProdNotFoundError
from airflow_provider_iceprod.hooks.iceprod import IceProdHook

DAGS = Path(__file__).resolve().parent / "dags"
CONFIG = {"tasks": [{"name": "generate", "trays": [{"modules": [{"src": "generate"}]}]}]}


@pytest.fixture
def ip(iceprod_connection: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AIRFLOW_ICEPROD_LOCK_DIR", str(tmp_path / "locks"))
    TOKEN_CACHE.clear()
    clear_discovery_cache()
    yield iceprod_connection
    TOKEN_CACHE.clear()


def _datasets(ip: Any, n: int = 2) -> list[str]:
    return sorted(ip.create_dataset(CONFIG) for _ in range(n))


def test_get_conn_is_rest_tools_client_on_the_providers_tokens(ip: Any) -> None:
    expected = _datasets(ip)
    client = IceProdHook().get_conn()
    assert isinstance(client, RestClient)
    for _ in range(3):
        datasets = client.request_seq("GET", "/datasets", {"keys": "dataset_id"})
        assert sorted(datasets) == expected
    # rest-tools did not refresh by itself: one grant, from the provider's shared cache
    assert ip.counters.grants["refresh_token"] == 1
    IceProdHook().whoami()  # another hook in this process shares the token
    assert ip.counters.grants["refresh_token"] == 1


async def test_await_get_conn_request_in_a_script(ip: Any) -> None:
    expected = _datasets(ip)
    client = await IceProdHook().aget_conn()
    datasets = await client.request("GET", "/datasets", {"keys": "dataset_id"})
    assert sorted(datasets) == expected


def test_an_expired_token_is_replaced_once(ip: Any) -> None:
    _datasets(ip, 1)
    client = IceProdHook().get_conn()
    client.request_seq("GET", "/datasets", {"keys": "dataset_id"})
    ip.expire_access_tokens()  # IceProd now answers 403 "authentication failed" to the cached token
    assert client.request_seq("GET", "/datasets", {"keys": "dataset_id"})
    assert ip.counters.grants["refresh_token"] == 2


def test_run_and_arun_reach_an_unwrapped_route(ip: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``GET /task_counts/status`` (all datasets; system accounts only) has no hook method."""
    import asyncio

    monkeypatch.setenv("AIRFLOW_CONN_ICEPROD_SERVICE", ip.airflow_connection_json(service=True))
    ip.create_dataset(CONFIG, jobs_submitted=2, materialize=True)
    counts = IceProdHook("iceprod_service").run("GET", "/task_counts/status")
    assert isinstance(counts, dict) and sum(counts.values()) >= 2
    again = asyncio.run(IceProdHook("iceprod_service").arun("GET", "/task_counts/status"))
    assert sum(again.values()) == sum(counts.values())  # the grid moves tasks on meanwhile
    with pytest.raises(IceProdNotFoundError):
        IceProdHook().run("GET", "/no/such/route")


def test_in_a_task_and_a_trigger(ip: Any, airflow_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _datasets(ip)
    monkeypatch.setenv("AIRFLOW_CONN_ICEPROD_SERVICE", ip.airflow_connection_json(service=True))
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    bundles = [
        {"name": "dags-folder", "classpath": local, "kwargs": {}},
        {
            "name": "iceprod-rest-client",
            "classpath": local,
            "kwargs": {"path": str(DAGS), "refresh_interval": 0},
        },
    ]
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
    spec = importlib.util.spec_from_file_location("iceprod_rest_client_dag", DAGS / "iceprod_rest_client.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag_run = module.iceprod_test_rest_client.test()
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert set(states.values()) == {"success"}, states
    tis = {ti.task_id: ti for ti in dag_run.get_task_instances()}
    assert tis["list_in_task"].xcom_pull(task_ids="list_in_task") == expected
    assert tis["list_in_trigger"].xcom_pull(task_ids="list_in_trigger") == expected
    assert isinstance(tis["unwrapped_route_in_task"].xcom_pull(task_ids="unwrapped_route_in_task"), dict)
