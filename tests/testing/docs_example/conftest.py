"""Use ``docs_example/dags`` as the DAGs folder for these tests (as an author's conftest does)."""

from __future__ import annotations

from pathlib import Path

import pytest

DAGS = Path(__file__).parent / "dags"


@pytest.fixture(autouse=True)
def _dags_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS))
    monkeypatch.syspath_prepend(str(DAGS))
