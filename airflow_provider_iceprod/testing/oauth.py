"""OAuth names shared by the stand-in's identity provider, its device flow and its HTTP handlers."""

from __future__ import annotations

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class OAuthError(Exception):
    """An OAuth error answer: ``{"error": error, "error_description": description}``."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


class InvalidAccessToken(Exception):
    """The bearer token is missing, malformed, badly signed, expired or from another issuer."""
