"""``airflow-iceprod local-server`` without the ``testing`` extra names the extra to install."""

from __future__ import annotations

import subprocess
import sys


def test_local_server_names_the_testing_extra_when_tornado_is_missing() -> None:
    code = (
        "import sys; sys.modules['tornado'] = None\n"
        "from airflow_provider_iceprod.cli import main\n"
        "sys.exit(main(['local-server']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "airflow-provider-iceprod[testing]" in proc.stderr and "tornado" in proc.stderr


def test_runtime_imports_need_neither_tornado_nor_jwt() -> None:
    code = (
        "import sys\n"
        "for name in ('tornado', 'jwt'): sys.modules[name] = None\n"
        "import airflow_provider_iceprod.hooks.iceprod, airflow_provider_iceprod.operators, "
        "airflow_provider_iceprod.sensors, airflow_provider_iceprod.triggers.dataset, "
        "airflow_provider_iceprod.auth.provider, airflow_provider_iceprod.cli\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
