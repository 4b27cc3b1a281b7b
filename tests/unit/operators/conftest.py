"""Operator fixtures (see ``tests/helpers/operator_fixtures.py``)."""

from operator_fixtures import fast_examples, later  # noqa: F401
