"""The extra link, the asset helpers and the import cost of the operators package."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from airflow_provider_iceprod.assets import iceprod_asset, iceprod_asset_uri, is_iceprod_asset
from airflow_provider_iceprod.exceptions import IceProdConfigError
from airflow_provider_iceprod.links import IceProdDatasetLink
from airflow_provider_iceprod.operators._resume import submit_marker


def test_link_name_and_xcom_key() -> None:
    link = IceProdDatasetLink()
    assert link.name == "IceProd dataset"
    assert link.xcom_key == "_link_IceProdDatasetLink"


def test_link_never_raises_outside_a_task() -> None:
    ti_key = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1, try_number=1)
    assert IceProdDatasetLink().get_link(None, ti_key=ti_key) == ""  # type: ignore[arg-type]


def test_link_is_registered_by_both_operators() -> None:
    from airflow_provider_iceprod.get_provider_info import get_provider_info
    from airflow_provider_iceprod.operators import IceProdDatasetActionOperator, IceProdSubmitDatasetOperator

    assert "airflow_provider_iceprod.links.IceProdDatasetLink" in get_provider_info()["extra-links"]
    for operator in (IceProdSubmitDatasetOperator, IceProdDatasetActionOperator):
        assert any(isinstance(link, IceProdDatasetLink) for link in operator.operator_extra_links)


@pytest.mark.parametrize(
    ("where", "number", "uri"),
    [
        ("https://api.iceprod.icecube.aq", 22100, "iceprod://api.iceprod.icecube.aq/datasets/22100"),
        ("API.IceProd.icecube.aq", "7", "iceprod://api.iceprod.icecube.aq/datasets/7"),
        ("http://127.0.0.1:8123/", 3, "iceprod://127.0.0.1:8123/datasets/3"),
    ],
)
def test_asset_uri(where: str, number: int | str, uri: str) -> None:
    assert iceprod_asset_uri(where, number) == uri
    asset = iceprod_asset(where, number)
    assert asset.uri == uri
    assert asset.name == uri
    assert asset.group == "iceprod"
    assert is_iceprod_asset(asset)


@pytest.mark.parametrize(
    ("where", "number"),
    [("", 1), ("https://api.iceprod.icecube.aq/datasets", 1), ("api.iceprod.icecube.aq", 0), ("x", "abc")],
)
def test_asset_uri_rejects_bad_input(where: str, number: object) -> None:
    with pytest.raises(IceProdConfigError):
        iceprod_asset_uri(where, number)  # type: ignore[arg-type]


def test_marker_is_deterministic_short_and_distinct() -> None:
    first = submit_marker("dag", "run", "submit", -1)
    assert first == submit_marker("dag", "run", "submit", None)
    assert len(first) == 16 and int(first, 16) >= 0
    others = {
        submit_marker("dag", "run", "submit", 0),
        submit_marker("dag", "run2", "submit", -1),
        submit_marker("dag2", "run", "submit", -1),
        submit_marker("dag", "run", "submit2", -1),
    }
    assert first not in others and len(others) == 4


HEAVY = ("httpx", "tenacity", "jsonschema", "yaml", "tornado", "rest_tools", "jwt", "qrcode")
PROBE = f"""
import sys, time, airflow.sdk
before = set(sys.modules)
t0 = time.perf_counter()
import airflow_provider_iceprod.operators
elapsed = time.perf_counter() - t0
heavy_package = {{m.split('.')[0] for m in set(sys.modules) - before}} & set({HEAVY!r})
from airflow_provider_iceprod.operators import IceProdDatasetActionOperator, IceProdSubmitDatasetOperator
heavy_modules = {{m.split('.')[0] for m in set(sys.modules) - before}} & set({HEAVY!r})
print(elapsed, ','.join(sorted(heavy_package)) or '-', ','.join(sorted(heavy_modules)) or '-')
"""


def test_operators_import_is_light() -> None:
    """``import airflow_provider_iceprod.operators`` adds little to ``import airflow.sdk``; loading
    the operator classes pulls in no HTTP, retry, schema, YAML or server library."""
    out = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True, text=True).stdout
    elapsed, heavy_package, heavy_modules = out.split()
    assert heavy_package == "-"
    assert heavy_modules == "-"
    # a generous bound only (measured: ~1-3 ms); the import cost itself is compared side by side
    # in benchmarks/import_cost.py, and the two checks above are what keep it small
    assert float(elapsed) < 0.5
