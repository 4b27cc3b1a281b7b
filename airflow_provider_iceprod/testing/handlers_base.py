"""What every stand-in handler shares: counters, fault injection, IceProd's auth and error format."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import tornado.escape
import tornado.web

from airflow_provider_iceprod.testing.oauth import InvalidAccessToken
from airflow_provider_iceprod.testing.states import ApiError, split_arg
from airflow_provider_iceprod.testing.store import Caller

if TYPE_CHECKING:
    from airflow_provider_iceprod.testing.actions import ActionQueue
    from airflow_provider_iceprod.testing.faults import Counters, Fault, Faults
    from airflow_provider_iceprod.testing.grid import Grid
    from airflow_provider_iceprod.testing.idp import IdentityProvider
    from airflow_provider_iceprod.testing.store import Store

log = logging.getLogger(__name__)

ALL_ROLES = ("admin", "user", "system")
_ROLE_GROUP_RULES: tuple[tuple[str, str], ...] = (
    ("admin", r"/tokens/IceProdAdmins"),
    ("user", r"/institutions/IceCube.*"),
)
_GROUP_RULES: tuple[tuple[str, str], ...] = (
    ("admin", r"/tokens/IceProdAdmins"),
    ("simprod", r"/posix/simprod-submit"),
    ("filtering", r"/posix/i3filter"),
    ("users", r"/institutions/IceCube.*"),
)


@dataclass
class Context:
    """The shared state every handler gets (passed as ``initialize`` keyword)."""

    store: Store
    grid: Grid
    idp: IdentityProvider
    actions: ActionQueue
    faults: Faults
    counters: Counters
    api_url: str
    clock: Callable[[], float]


def roles_and_groups(claims: dict[str, Any]) -> tuple[set[str], set[str]]:
    """IceProd's mapping of token claims to roles and groups (``iceprod/roles_groups.py``)."""
    token_groups = claims.get("groups")
    if not isinstance(token_groups, list):
        token_groups = [token_groups] if isinstance(token_groups, str) else []
    roles = {r for r, rx in _ROLE_GROUP_RULES if any(re.fullmatch(rx, str(g)) for g in token_groups)}
    groups = {g for g, rx in _GROUP_RULES if any(re.fullmatch(rx, str(v)) for v in token_groups)}
    iceprod_roles = claims.get("resource_access", {}).get("iceprod", {}).get("roles", [])
    if isinstance(iceprod_roles, list) and "iceprod-system" in iceprod_roles:
        roles.add("system")
    return roles, groups


class BaseHandler(tornado.web.RequestHandler):
    """Counts the request, applies injected faults, writes IceProd's JSON errors."""

    ROUTE: ClassVar[str] = ""
    ROUTE_PATTERNS: ClassVar[dict[str, str]] = {}

    def initialize(self, ctx: Context, route_key: str) -> None:  # type: ignore[override]
        self.ctx = ctx
        self.route_key = route_key
        self._after_fault: Fault | None = None

    def set_default_headers(self) -> None:
        self.set_header("Server", "IceProd-standin")

    async def prepare(self) -> None:
        method = self.request.method or "GET"
        self.ctx.counters.hit(f"{method} {self.route_key}")
        fault = self.ctx.faults.take(method, self.request.path, self.route_key)
        if fault is None:
            return
        if fault.when == "after":
            self._after_fault = fault
            return
        if fault.latency:
            await asyncio.sleep(fault.latency)
        if fault.drop:
            self.detach().close()
        elif fault.status is not None:
            self._write_fault(fault)
            tornado.web.RequestHandler.finish(self)

    def _write_fault(self, fault: Fault) -> None:
        self.clear()
        self.set_status(fault.status or 500, reason=fault.reason)
        if fault.retry_after is not None:
            ra = fault.retry_after
            self.set_header("Retry-After", str(int(ra)) if float(ra).is_integer() else str(ra))
        self.write_json({"code": fault.status, "error": fault.reason})

    def finish(self, chunk: Any = None) -> Any:
        fault = self._after_fault
        if fault is None:
            return super().finish(chunk)
        self._after_fault = None
        return asyncio.ensure_future(self._finish_after_fault(fault, chunk))

    async def _finish_after_fault(self, fault: Fault, chunk: Any) -> None:
        if fault.latency:
            await asyncio.sleep(fault.latency)
        if fault.drop:
            self.detach().close()
            return
        if fault.status is not None:
            self._write_fault(fault)
            chunk = None
        await tornado.web.RequestHandler.finish(self, chunk)

    # ---------------------------------------------------------------- output

    def write_json(self, data: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.write(tornado.escape.json_encode(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.write_json({"code": status_code, "error": self._reason})

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, tornado.web.HTTPError):
            log.debug("%s %s: %s", self.request.method, self.request.path, value)
        else:
            log.error("unexpected error in %s", type(self).__name__, exc_info=(typ, value, tb))

    # ---------------------------------------------------------------- input

    def json_body(self) -> Any:
        """The body as IceProd reads it: ``json.loads(self.request.body)`` (errors are 500s)."""
        return json.loads(self.request.body)

    def arg(self, name: str, default: Any = None) -> Any:
        """rest-tools' ``get_argument``: the query string first, then a JSON body."""
        values = self.request.query_arguments.get(name)
        if values:
            return values[-1].decode("utf-8", "replace").strip()
        if self.request.body:
            try:
                body = json.loads(self.request.body)
            except ValueError:
                raise ApiError(400, "requests body is not JSON-encoded") from None
            if not isinstance(body, dict):
                raise ApiError(400, "JSON-encoded requests body must be a 'dict'")
            if name in body:
                return body[name]
        return default

    def status_arg(self, machine: Mapping[str, list[str]], unknown: str) -> list[str]:
        """The ``status`` filter (``a|b``), or ``400 <unknown>`` when a status is not in the state machine."""
        statuses = split_arg(self.arg("status"))
        if any(s not in machine for s in statuses):
            raise ApiError(400, unknown)
        return statuses

    # ---------------------------------------------------------------- auth

    def authenticate(self, roles: tuple[str, ...]) -> Caller:
        header = self.request.headers.get("Authorization", "")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token:
            raise ApiError(403, "authentication failed")
        try:
            claims = self.ctx.idp.validate_access_token(token.strip())
        except InvalidAccessToken:
            raise ApiError(403, "authentication failed") from None
        token_roles, groups = roles_and_groups(claims)
        username = "iceprod-system" if "system" in token_roles else claims.get("preferred_username")
        if not claims.get("sub") or not username:
            raise ApiError(403, "authentication failed")
        matched = tuple(sorted(r for r in token_roles if r in roles))
        if not matched:
            raise ApiError(403, "authorization failed")
        return Caller(username=str(username), roles=matched, groups=tuple(sorted(groups)))


def api(
    roles: tuple[str, ...] = ALL_ROLES, acl: str | None = None
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Decorate a handler method like IceProd: authenticate, match roles, dataset ACL, catch errors.

    The method receives the :class:`Caller` after ``self`` and runs under the store lock.
    Unexpected exceptions become ``500 Error in <HandlerClass>``, as rest-tools' ``catch_error`` does.
    """

    def decorate(method: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(method)
        def wrapper(self: BaseHandler, **kwargs: str) -> None:
            try:
                caller = self.authenticate(roles)
                with self.ctx.store.lock:
                    if acl is not None:
                        self.ctx.store.check_acl(caller, kwargs.get("dataset_id", ""), acl)
                    method(self, caller, **kwargs)
                    if self.request.method != "GET" and kwargs.get("dataset_id"):
                        self.ctx.store.touch(kwargs["dataset_id"])
            except ApiError as exc:
                raise tornado.web.HTTPError(exc.code, reason=exc.reason) from None
            except tornado.web.HTTPError:
                raise
            except Exception:
                log.debug("error in %s", type(self).__name__, exc_info=True)
                raise tornado.web.HTTPError(500, reason=f"Error in {type(self).__name__}") from None

        return wrapper

    return decorate


class NotFoundHandler(tornado.web.RequestHandler):
    """Unknown routes: tornado's HTML 404, as IceProd answers them."""

    def initialize(self, ctx: Context) -> None:  # type: ignore[override]
        self.ctx = ctx

    def prepare(self) -> None:
        self.ctx.counters.hit(f"{self.request.method} (unmatched)")
        raise tornado.web.HTTPError(404)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        log.debug("unknown route %s %s", self.request.method, self.request.path)
