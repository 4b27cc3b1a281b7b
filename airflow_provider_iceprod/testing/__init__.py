"""A local IceProd 3.2 stand-in (REST API, ``/actions/*``, OIDC issuer) for tests and demos.

Kept light on purpose: ``LocalIceProd`` and friends load tornado and cryptography only when first used::

    from airflow_provider_iceprod.testing import LocalIceProd

    with LocalIceProd(auto_approve_as="alice") as ip:
        token = ip.issue_refresh_token("alice")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_iceprod.testing.server import LocalIceProd, UserSpec

__all__ = ["LocalIceProd", "UserSpec"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from airflow_provider_iceprod.testing import server

        return getattr(server, name)
    raise AttributeError(name)
