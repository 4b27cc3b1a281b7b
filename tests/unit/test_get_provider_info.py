"""The package registers itself with Airflow like any published provider."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from airflow_provider_iceprod.get_provider_info import get_provider_info

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_entry_point_points_at_get_provider_info() -> None:
    eps = [
        ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("airflow_provider")
    ]
    assert [ep.value for ep in eps] == ["airflow_provider_iceprod.get_provider_info:get_provider_info"]
    assert eps[0].load() is get_provider_info


def test_provider_info_declares_the_connection_form() -> None:
    info = get_provider_info()
    assert info["package-name"] == "airflow-provider-iceprod"
    (conn,) = info["connection-types"]
    assert conn["connection-type"] == "iceprod"
    assert conn["hook-name"] == "IceProd"
    assert set(conn["conn-fields"]) == {
        "oauth_url",
        "client_id",
        "refresh_token",
        "actions_url",
        "website_url",
    }
    assert conn["conn-fields"]["refresh_token"]["schema"]["format"] == "password"
    # Airflow hides every extra whose name contains "token": the issuer must not be called token_url.
    assert "token_url" not in conn["conn-fields"]


def test_provider_info_classes_import() -> None:
    """Every class path the provider info names must import (Airflow would warn and drop it)."""
    from airflow.sdk.module_loading import import_string

    info = get_provider_info()
    import_string(info["connection-types"][0]["hook-class-name"])
    for link in info["extra-links"]:
        import_string(link)
    for trigger in info["triggers"]:
        for module in trigger["python-modules"]:
            __import__(module)


def test_providers_manager_sees_the_conn_type() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-iceprod" in manager.providers
    behaviour = manager.field_behaviours["iceprod"]
    assert behaviour["hidden_fields"] == ["schema", "port", "login"]
    assert "extra__iceprod__oauth_url" in manager.connection_form_widgets
    hook = manager.hooks["iceprod"]
    assert hook is not None and hook.hook_class_name.endswith("IceProdHook")


def test_airflow_cli_lists_the_provider() -> None:
    out = subprocess.run(
        [str(BIN / "airflow"), "providers", "list", "-o", "json"],
        check=True,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    ).stdout
    names = {row["package_name"] for row in json.loads(out[out.index("[") :])}
    assert "airflow-provider-iceprod" in names


@pytest.mark.skipif(shutil.which("uv", path=str(BIN)) is None, reason="uv is installed by `make test`")
def test_clean_venv_install_registers_provider(tmp_path: Path) -> None:
    """`pip install .` into a clean venv registers the provider and its py.typed and data files."""
    uv = str(BIN / "uv")
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(REPO_ROOT)],
        check=True,
    )
    probe = (
        "import json, importlib.resources as r\n"
        "from airflow.providers_manager import ProvidersManager\n"
        "pm = ProvidersManager()\n"
        "pkg = r.files('airflow_provider_iceprod')\n"
        "print(json.dumps({'providers': sorted(pm.providers), 'typed': pkg.joinpath('py.typed').is_file(),\n"
        "  'fields': sorted(k for k in pm.connection_form_widgets if 'iceprod' in k)}))\n"
    )
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "home")}
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe], check=True, capture_output=True, text=True, env=env
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert "airflow-provider-iceprod" in result["providers"]
    assert result["typed"] is True
    assert "extra__iceprod__oauth_url" in result["fields"]
    cli = subprocess.run([str(venv / "bin" / "airflow-iceprod"), "--help"], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
