"""Fidelity tier: each scenario runs against the stand-in and against IceProd 3.2.43's own server code.

The Python 3.12 venv with ``iceprod==3.2.43`` is built (idempotently) by ``scripts/fidelity_venv.sh``;
the tier is skipped, with the reason, only when no Python >= 3.12 exists to build it.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sides import BATCH, REPO_ROOT, RealIceProd, Side, StandIn

from airflow_provider_iceprod.testing.server import LocalIceProd


@pytest.fixture(scope="session")
def fidelity_venv() -> None:
    proc = subprocess.run(
        [str(REPO_ROOT / "scripts" / "fidelity_venv.sh")], capture_output=True, text=True, check=False
    )
    if proc.returncode == 3:
        pytest.skip(f"fidelity tier skipped: {proc.stderr.strip()}")
    if proc.returncode != 0:
        pytest.fail(f"building the fidelity venv failed:\n{proc.stderr}")


@pytest.fixture
def idp() -> Iterator[LocalIceProd]:
    """The stand-in under test; its identity provider also issues the tokens real IceProd checks."""
    with LocalIceProd(
        auto_approve_as="alice",
        grid_tick=0.02,
        task_duration=0.15,  # longer than a materialization pass, as on a real grid
        materialize_interval=0.05,
        action_delay=0.01,
        materialize_batch=BATCH,
        missing_config_grace=0.0,
    ) as server:
        yield server


@pytest.fixture
def sides(fidelity_venv: None, idp: LocalIceProd) -> Iterator[tuple[Side, Side]]:
    """``(stand_in, real_iceprod)``, both fresh."""
    standin = StandIn(idp)
    real = RealIceProd(idp)
    try:
        yield standin, real
    finally:
        standin.close()
        real.close()
