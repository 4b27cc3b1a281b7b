"""Credentials for IceProd: OIDC grants, the process-wide token cache and the token-state overlay.

``TokenProvider`` is what the hook's transport asks for bearer tokens; the rest are its parts.
"""

from __future__ import annotations

from airflow_provider_iceprod.auth.provider import TokenProvider
from airflow_provider_iceprod.auth.state import TokenStateStore, VariableTokenStateStore, variable_name
from airflow_provider_iceprod.auth.status import TokenStatus

__all__ = ["TokenProvider", "TokenStateStore", "TokenStatus", "VariableTokenStateStore", "variable_name"]
