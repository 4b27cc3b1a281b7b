"""``LocalIceProd``: the IceProd REST API, ``/actions/*`` and an OIDC issuer on one loopback port.

The server runs tornado on its own asyncio loop in a daemon thread. Use it as a context manager::

    with LocalIceProd(auto_approve_as="alice") as ip:
        token = ip.issue_refresh_token("alice")
        ...  # talk HTTP to ip.api_url, authenticate against ip.issuer_url
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airflow_provider_iceprod.testing.actions import ActionQueue
from airflow_provider_iceprod.testing.client_access import REALM_PATH, ClientAccess
from airflow_provider_iceprod.testing.faults import Counters, Faults
from airflow_provider_iceprod.testing.grid import Grid
from airflow_provider_iceprod.testing.handlers_base import BaseHandler, Context, NotFoundHandler
from airflow_provider_iceprod.testing.idp import IdentityProvider, UserSpec, make_users
from airflow_provider_iceprod.testing.states import ApiError
from airflow_provider_iceprod.testing.store import Caller, Store

__all__ = ["LocalIceProd", "UserSpec"]

log = logging.getLogger(__name__)

_ID_PATTERN = r"\w+"


def _url_pattern(prefix: str, cls: type[BaseHandler]) -> str:
    parts = re.split(r"(\{\w+\})", prefix + cls.ROUTE)
    out = []
    for part in parts:
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            out.append(f"(?P<{name}>{cls.ROUTE_PATTERNS.get(name, _ID_PATTERN)})")
        else:
            out.append(re.escape(part))
    return "".join(out)


class LocalIceProd(ClientAccess):
    """A local IceProd 3.2 stand-in with an identity provider, a simulated grid and fault injection.

    Args:
        port: TCP port on 127.0.0.1 (0: a free one).
        token_lifetime: access-token lifetime in seconds.
        rotate_refresh_tokens: single-use refresh tokens (each refresh returns a new one and revokes the
            used one; reuse answers ``400 invalid_grant``). Default: Keycloak's default, where a refresh
            returns a new refresh token and the old one stays valid.
        grid_tick: seconds between grid/cron passes; also the time a task spends waiting and queued.
        task_duration: seconds a task spends processing (a number, or ``{task_name: seconds}``).
        materialize_interval: seconds between materialization cron passes (``None`` or 0: disabled).
        action_delay: seconds per ``/actions/*`` step (queued -> processing -> complete).
        action_record_ttl: seconds until an action record expires (then ``404 Request not found``).
        auto_approve_as: approve every device code at once as this user (``None``: a person approves on
            the verification page).
        auto_approve_delay: seconds before an auto-approved device code is usable.
        users: extra or replacing users, ``{username: [group paths]}``. Defaults: ``alice`` (IceCube +
            simprod), ``bob`` (IceCube), ``admin`` (IceCube + IceProd admins), ``outsider`` (no IceCube).
        device_code_lifetime: RFC 8628 ``expires_in`` of device codes, in seconds.
        device_interval: RFC 8628 polling ``interval`` in seconds (polling faster answers ``slow_down``).
        fail_tasks: ``{task_name: probability}`` or ``{task_name: {"times": N}}`` failure rules.
        service_client_secret: secret of the confidential client ``iceprod-service`` (default: random).
        service_system: the confidential client's tokens carry the ``iceprod-system`` role.
        service_user: without ``service_system``, the user whose identity and groups its tokens carry.
        auth_leeway: seconds of leeway when checking ``exp`` (IceProd uses 60).
        actions_path: serve ``/actions/*`` below this path (``""``: on the API base URL, like production).
        materialize_batch: jobs per dataset per materialization cron pass (IceProd: about 100).
        dataset_cleanup: run IceProd's ``dataset_cleanup`` cron (suspends leftovers of stopped jobs).
        missing_config_grace: seconds before a processing dataset without config is suspended.
        seed: seed for failure probabilities.
        iceprod_bugs: reproduce IceProd 3.2.43's bugs (default, see docs/iceprod-quirks.md): materialization
            ignores ``truncated``; ``"<dataset_id>:<task>"`` depends never resolve; a submit whose
            ``auth_groups_read`` names an unknown group is retried by the services' HTTP client (0, 0,
            0.6, 1.8, 4.2, ... s; ``submit_retry_scale`` scales them), each try leaving an orphan.
            ``False``: what IceProd means to do.
        submit_retry_scale: factor on the retry delays of such a submit (1.0: IceProd's real timing).
    """

    def __init__(
        self,
        *,
        port: int = 0,
        token_lifetime: float = 300,
        rotate_refresh_tokens: bool = False,
        grid_tick: float = 0.05,
        task_duration: float | Mapping[str, float] = 0.2,
        materialize_interval: float | None = 0.5,
        action_delay: float = 0.05,
        action_record_ttl: float = 86400,
        auto_approve_as: str | None = None,
        auto_approve_delay: float = 0.0,
        users: Mapping[str, Sequence[str] | UserSpec] | None = None,
        device_code_lifetime: float = 600,
        device_interval: float = 5,
        fail_tasks: Mapping[str, float | Mapping[str, Any]] | None = None,
        service_client_secret: str | None = None,
        service_system: bool = True,
        service_user: str | None = None,
        auth_leeway: float = 60,
        actions_path: str = "",
        materialize_batch: int = 100,
        dataset_cleanup: bool = True,
        missing_config_grace: float = 5.0,
        seed: int | None = None,
        iceprod_bugs: bool = True,
        submit_retry_scale: float = 1.0,
    ) -> None:
        if grid_tick <= 0:
            raise ValueError("grid_tick must be > 0")
        self._port = port
        self._options: dict[str, Any] = {
            "token_lifetime": token_lifetime,
            "rotate_refresh_tokens": rotate_refresh_tokens,
            "device_code_lifetime": device_code_lifetime,
            "device_interval": device_interval,
            "auto_approve_as": auto_approve_as,
            "auto_approve_delay": auto_approve_delay,
            "service_client_secret": service_client_secret,
            "service_system": service_system,
            "service_user": service_user,
            "leeway": auth_leeway,
        }
        self._users = make_users(users)
        self.grid_tick = grid_tick
        self.materialize_interval = materialize_interval
        self._task_duration = task_duration
        self._fail_tasks = fail_tasks
        self._action_delay = action_delay
        self._action_ttl = action_record_ttl
        self._actions_path = actions_path.rstrip("/")
        if self._actions_path and not self._actions_path.startswith("/"):
            raise ValueError("actions_path must start with '/'")
        self._materialize_batch = materialize_batch
        self._dataset_cleanup = dataset_cleanup
        self._missing_config_grace = missing_config_grace
        self._seed = seed
        self._iceprod_bugs = iceprod_bugs
        self._submit_retry_scale = submit_retry_scale
        self.counters = Counters()
        self.faults = Faults()
        self.store = Store()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.base_url = ""

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> LocalIceProd:
        """Bind the port and start serving (returns once the server answers)."""
        if self._thread is not None:
            raise RuntimeError("already started")
        import tornado.netutil

        from airflow_provider_iceprod.testing.validation import warm_up

        warm_up()  # in this thread, before serving: the first import of Airflow takes seconds
        sockets = tornado.netutil.bind_sockets(self._port, address="127.0.0.1")
        self.port = sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.idp = IdentityProvider(self.issuer_url, users=self._users, **self._options)
        self.grid = Grid(
            self.store,
            api_url=self.api_url,
            task_duration=self._task_duration,
            step=self.grid_tick,
            fail_tasks=self._fail_tasks,
            materialize_batch=self._materialize_batch,
            missing_config_grace=self._missing_config_grace,
            dataset_cleanup=self._dataset_cleanup,
            seed=self._seed,
            iceprod_bugs=self._iceprod_bugs,
        )
        self.actions = ActionQueue(
            self.store,
            self.grid,
            api_url=self.api_url,
            clock=time.monotonic,
            delay=self._action_delay,
            ttl=self._action_ttl,
            iceprod_bugs=self._iceprod_bugs,
            submit_retry_scale=self._submit_retry_scale,
        )
        self._ctx = Context(
            store=self.store,
            grid=self.grid,
            idp=self.idp,
            actions=self.actions,
            faults=self.faults,
            counters=self.counters,
            api_url=self.api_url,
            clock=time.monotonic,
        )
        self._thread = threading.Thread(
            target=self._serve, args=(sockets,), name=f"LocalIceProd-{self.port}", daemon=True
        )
        self._thread.start()
        self._ready.wait(30)
        if self._startup_error is not None:
            self._thread.join(5)
            raise RuntimeError("LocalIceProd failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and the port, and end the server thread."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        self._thread = None

    def __enter__(self) -> LocalIceProd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _routes(self) -> list[Any]:
        import tornado.web

        from airflow_provider_iceprod.testing import (
            handlers_actions,
            handlers_datasets,
            handlers_idp,
            handlers_jobs,
            handlers_tasks,
            handlers_website,
        )

        groups: list[tuple[str, list[type[BaseHandler]]]] = [
            ("", handlers_datasets.HANDLERS + handlers_jobs.HANDLERS + handlers_tasks.HANDLERS),
            (self._actions_path, handlers_actions.handlers()),
            (REALM_PATH, handlers_idp.HANDLERS),
            ("", handlers_website.HANDLERS),
        ]
        if self._actions_path:
            groups.append((self._actions_path, [handlers_actions.ActionsHealthHandler]))
        specs = []
        for prefix, classes in groups:
            for cls in classes:
                specs.append(
                    tornado.web.URLSpec(
                        _url_pattern(prefix, cls), cls, {"ctx": self._ctx, "route_key": prefix + cls.ROUTE}
                    )
                )
        return specs

    def _serve(self, sockets: list[Any]) -> None:
        import tornado.httpserver
        import tornado.ioloop
        import tornado.web

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        server = None
        callbacks: list[Any] = []
        try:

            async def setup() -> tornado.httpserver.HTTPServer:
                app = tornado.web.Application(
                    self._routes(),
                    default_handler_class=NotFoundHandler,
                    default_handler_args={"ctx": self._ctx},
                    log_function=lambda handler: None,
                )
                counters = self.counters

                class CountingServer(tornado.httpserver.HTTPServer):
                    def handle_stream(self, stream: Any, address: Any) -> None:
                        counters.accepted()
                        super().handle_stream(stream, address)

                http = CountingServer(app)
                http.add_sockets(sockets)
                tick = tornado.ioloop.PeriodicCallback(self._tick, self.grid_tick * 1000)
                tick.start()
                callbacks.append(tick)
                if self.materialize_interval:
                    cron = tornado.ioloop.PeriodicCallback(self._cron, self.materialize_interval * 1000)
                    cron.start()
                    callbacks.append(cron)
                return http

            self.actions.schedule = self._schedule
            server = loop.run_until_complete(setup())
        except BaseException as exc:
            self._startup_error = exc
            for sock in sockets:
                sock.close()
            loop.close()
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            for cb in callbacks:
                cb.stop()
            server.stop()
            loop.run_until_complete(self._shutdown(server))
            loop.close()

    @staticmethod
    async def _shutdown(server: Any) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.close_all_connections(), 5)
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _schedule(self, delay: float, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.call_later(delay, fn)
        else:
            loop.call_soon_threadsafe(loop.call_later, delay, fn)

    def _tick(self) -> None:
        try:
            self.grid.tick(time.monotonic())
        except Exception:
            log.exception("grid tick failed")

    def _cron(self) -> None:
        try:
            self.grid.cron_materialize(time.monotonic())
        except Exception:
            log.exception("materialization cron failed")

    # ---------------------------------------------------------------- state, for assertions

    def reset_counters(self) -> None:
        self.counters.reset()

    def datasets(self) -> list[dict[str, Any]]:
        """Snapshot of all datasets (copies)."""
        with self.store.lock:
            return copy.deepcopy(list(self.store.datasets.values()))

    def dataset_count(self) -> int:
        with self.store.lock:
            return len(self.store.datasets)

    def dataset(self, dataset_id: str) -> dict[str, Any]:
        with self.store.lock:
            return copy.deepcopy(self.store.dataset(dataset_id))

    def config(self, dataset_id: str) -> dict[str, Any] | None:
        with self.store.lock:
            return copy.deepcopy(self.store.configs.get(dataset_id))

    def jobs(self, dataset_id: str) -> list[dict[str, Any]]:
        with self.store.lock:
            return [_public(j) for j in self.store.dataset_jobs(dataset_id).values()]

    def tasks(self, dataset_id: str) -> list[dict[str, Any]]:
        with self.store.lock:
            return [_public(t) for t in self.store.dataset_tasks(dataset_id).values()]

    def task_counts(self, dataset_id: str) -> dict[str, int]:
        with self.store.lock:
            counts: dict[str, int] = {}
            for task in self.store.dataset_tasks(dataset_id).values():
                counts[task["status"]] = counts.get(task["status"], 0) + 1
            return counts

    def action_records(self) -> list[dict[str, Any]]:
        """All unexpired ``/actions/*`` records (with their ``type``)."""
        return self.actions.records()

    def create_dataset(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        jobs_submitted: int = 1,
        username: str = "alice",
        group: str = "users",
        description: str = "stand-in dataset",
        materialize: bool = False,
        **fields: Any,
    ) -> str:
        """Create a dataset and its config directly (like a completed submit). Returns its id.

        ``config`` defaults to one task called ``generate``. With ``materialize=True`` its jobs and
        tasks exist at once; otherwise the materialization cron (or a request) creates them.
        """
        if config is None:
            config = {
                "version": 3.2,
                "tasks": [{"name": "generate", "trays": [{"modules": [{"src": "/usr/bin/true"}]}]}],
            }
        from airflow_provider_iceprod.testing.validation import check_config_for_submit

        filled = json.loads(check_config_for_submit(json.dumps(config)))
        tasks_per_job = len(filled["tasks"])
        data = {
            "description": description,
            "jobs_submitted": jobs_submitted,
            "tasks_submitted": jobs_submitted * tasks_per_job,
            "tasks_per_job": tasks_per_job,
            "group": group,
            "username": username,
            **fields,
        }
        system = Caller(username="iceprod-system", roles=("system",), groups=())
        with self.store.lock:
            try:
                dataset_id = self.store.create_dataset(data, system, now=time.monotonic())
            except ApiError as exc:
                raise ValueError(exc.reason) from None
            self.store.configs[dataset_id] = dict(filled, dataset_id=dataset_id)
            if materialize:
                self.grid.materialize(dataset_id, time.monotonic(), num=jobs_submitted)
        return dataset_id


def _public(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in doc.items() if not k.startswith("_")}
