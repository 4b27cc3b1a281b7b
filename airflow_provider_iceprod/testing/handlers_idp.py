"""HTTP endpoints of the stand-in's identity provider (Keycloak paths below ``/auth/realms/IceCube``)."""

from __future__ import annotations

import base64
import binascii
import html
from typing import Any
from urllib.parse import unquote

from airflow_provider_iceprod.testing.handlers_base import BaseHandler
from airflow_provider_iceprod.testing.oauth import DEVICE_GRANT, OAuthError

GRANT_NAMES = {DEVICE_GRANT: "device_code"}


class _OAuthHandler(BaseHandler):
    def form(self) -> dict[str, str]:
        return {k: self.get_body_argument(k) for k in self.request.body_arguments}

    def basic_auth(self) -> tuple[str, str] | None:
        header = self.request.headers.get("Authorization", "")
        kind, _, value = header.partition(" ")
        if kind.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return unquote(user), unquote(password)

    def oauth_error(self, exc: OAuthError) -> None:
        self.set_status(exc.status)
        self.set_header("Cache-Control", "no-store")
        self.write_json({"error": exc.error, "error_description": exc.description})


class DiscoveryHandler(_OAuthHandler):
    ROUTE = "/.well-known/openid-configuration"

    def get(self) -> None:
        self.write_json(self.ctx.idp.discovery())


class CertsHandler(_OAuthHandler):
    ROUTE = "/protocol/openid-connect/certs"

    def get(self) -> None:
        self.write_json(self.ctx.idp.jwks)


class TokenHandler(_OAuthHandler):
    ROUTE = "/protocol/openid-connect/token"

    def post(self) -> None:
        form = self.form()
        grant = GRANT_NAMES.get(form.get("grant_type", ""), form.get("grant_type", "") or "(none)")
        try:
            answer: dict[str, Any] = self.ctx.idp.token(form, self.basic_auth())
        except OAuthError as exc:
            self.ctx.counters.grant(grant, issued=False)
            self.oauth_error(exc)
            return
        self.ctx.counters.grant(grant, issued=True)
        self.set_header("Cache-Control", "no-store")
        self.write_json(answer)


class DeviceAuthorizationHandler(_OAuthHandler):
    ROUTE = "/protocol/openid-connect/auth/device"

    def post(self) -> None:
        try:
            self.write_json(self.ctx.idp.device_authorize(self.form(), self.basic_auth()))
        except OAuthError as exc:
            self.oauth_error(exc)


class RevocationHandler(_OAuthHandler):
    ROUTE = "/protocol/openid-connect/revoke"

    def post(self) -> None:
        try:
            self.ctx.idp.revoke(self.form(), self.basic_auth())
        except OAuthError as exc:
            self.oauth_error(exc)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>IceProd stand-in: device login</title>
<style>body{{font-family:sans-serif;max-width:32em;margin:3em auto}}
input,select,button{{font-size:1.1em;margin:.3em}}
.msg{{padding:.6em;border-radius:4px;background:#eef}}.err{{background:#fee}}</style></head>
<body><h1>Device login</h1>{message}
<form method="post" action="{action}">
<p><label>Code <input name="user_code" value="{user_code}" autocomplete="off" required></label></p>
<p><label>Sign in as <select name="username">{options}</select></label></p>
<p><button type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny">Deny</button></p>
</form><p><small>Local IceProd stand-in: no password is asked.</small></p></body></html>
"""


class DevicePageHandler(_OAuthHandler):
    """The verification page: enter (or confirm) the user code, pick a user, Approve or Deny."""

    ROUTE = "/device"

    def _page(self, user_code: str, message: str = "", error: bool = False, status: int = 200) -> None:
        users = sorted(self.ctx.idp.users)
        preferred = self.ctx.idp.auto_approve_as or (users[0] if users else "")
        options = "".join(
            f'<option value="{html.escape(u)}"{" selected" * (u == preferred)}>{html.escape(u)}</option>'
            for u in users
        )
        note = f'<p class="msg{" err" if error else ""}">{html.escape(message)}</p>' if message else ""
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.write(
            _PAGE.format(
                message=note,
                action=html.escape(self.request.path),
                user_code=html.escape(user_code),
                options=options,
            )
        )

    def get(self) -> None:
        self._page(self.get_query_argument("user_code", ""))

    def post(self) -> None:
        user_code = self.get_body_argument("user_code", "")
        approve = self.get_body_argument("decision", "approve") == "approve"
        try:
            message = self.ctx.idp.decide(
                user_code, username=self.get_body_argument("username", ""), approve=approve
            )
        except OAuthError as exc:
            self._page(user_code, exc.description, error=True, status=400)
            return
        self._page("", message)


HANDLERS: list[type[BaseHandler]] = [
    DiscoveryHandler,
    CertsHandler,
    TokenHandler,
    DeviceAuthorizationHandler,
    RevocationHandler,
    DevicePageHandler,
]
