"""Test session setup: a real Airflow with a migrated SQLite metadata DB in a temp AIRFLOW_HOME.

The environment is set at import time, before anything imports airflow, so every test and every
subprocess the tests start sees the same temporary Airflow.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DAGS = REPO_ROOT / "example_dags"

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="iceprod-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(EXAMPLE_DAGS)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"
os.environ.setdefault(
    "AIRFLOW__CORE__FERNET_KEY", "SYoabuz0qzJ1B4EM7mBAnbUvcYpTbPMJr_qB8_7T2z8="
)  # test-only key
os.environ["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = str(_AIRFLOW_HOME / "logs")
# The host-local copy of the token-state overlay (auth/state_stores.py) stays inside the test home.
os.environ["AIRFLOW_ICEPROD_STATE_DIR"] = str(_AIRFLOW_HOME / "token-state")

pytest_plugins = ["airflow_provider_iceprod.testing.pytest_plugin"]


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    return _AIRFLOW_HOME


#: ``make mutation`` runs one pytest session per mutant: there the DB is migrated once into this file
#: and each session starts from a copy of it (see ``scripts/mutation.py``).
DB_TEMPLATE_ENV = "ICEPROD_TEST_DB_TEMPLATE"


def _migrate(db: Path) -> None:
    """The real ``airflow db migrate`` of the SQLite DB ``db``."""
    airflow = Path(sys.executable).with_name("airflow")
    env = dict(os.environ, AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{db}")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=env)


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """Migrate the SQLite metadata DB once per session with the real ``airflow db migrate``.

    With ``ICEPROD_TEST_DB_TEMPLATE`` set, the migration runs once into that file (when it is not
    there yet) and the session's DB is a fresh copy of it.
    """
    db = airflow_home / "airflow.db"
    template = os.environ.get(DB_TEMPLATE_ENV)
    if not template:
        _migrate(db)
        return db
    template_db = Path(template)
    if not template_db.exists():
        partial = template_db.with_name(f".{template_db.name}.{os.getpid()}")
        _migrate(partial)
        os.replace(partial, template_db)
    shutil.copyfile(template_db, db)
    return db


@pytest.fixture(autouse=True)
def _fresh_secrets_masker() -> Iterator[None]:
    """Forget the secrets masked by one test before the next.

    Airflow's masker recompiles one regex over every secret it has seen each time a secret is added.
    A worker sees a handful; this suite mints thousands of tokens, and without a reset each new mask
    gets slower (seconds per token late in the run).
    """
    yield
    try:
        from airflow.sdk.log import _secrets_masker
    except ImportError:  # Airflow 3.2 (task SDK 1.2) keeps it in the shared module
        from airflow.sdk._shared.secrets_masker.secrets_masker import _secrets_masker

    _secrets_masker().reset_masker()
