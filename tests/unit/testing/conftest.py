"""Fixtures for the stand-in's own tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from standin_helpers import Api

from airflow_provider_iceprod.testing import LocalIceProd


@pytest.fixture
def alice(iceprod_server: LocalIceProd) -> Iterator[Api]:
    api = Api(iceprod_server, "alice")
    yield api
    api.close()


@pytest.fixture
def admin(iceprod_server: LocalIceProd) -> Iterator[Api]:
    api = Api(iceprod_server, "admin")
    yield api
    api.close()
