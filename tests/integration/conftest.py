"""End-to-end fixtures: waits and example DAGs (see ``tests/helpers/``)."""

from operator_fixtures import fast_examples, later  # noqa: F401
from wait_fixtures import ip, slow, stalled, wait_dags  # noqa: F401
