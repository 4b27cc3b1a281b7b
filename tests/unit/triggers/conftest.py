"""Wait fixtures (see ``tests/helpers/wait_fixtures.py``)."""

from wait_fixtures import ip, slow, stalled, wait_dags  # noqa: F401
