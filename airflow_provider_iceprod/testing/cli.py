"""``airflow-iceprod local-server``: run the stand-in until interrupted.

Prints one JSON line with the URLs and client ids (optionally also written to a file), then serves.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType


def build_parser(prog: str = "airflow-iceprod local-server") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a local IceProd 3.2 stand-in (REST API, /actions/*, OIDC issuer, simulated grid).",
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument(
        "--write-json", metavar="FILE", help="also write the JSON with URLs and client ids here"
    )
    parser.add_argument(
        "--auto-approve-as", metavar="USER", help="approve device logins at once as this user (e.g. alice)"
    )
    parser.add_argument(
        "--rotate-refresh-tokens", action="store_true", help="single-use refresh tokens (rotation)"
    )
    parser.add_argument("--token-lifetime", type=float, default=300, help="access-token lifetime, s")
    parser.add_argument("--device-interval", type=float, default=5, help="device-flow polling interval, s")
    parser.add_argument("--grid-tick", type=float, default=0.5, help="seconds per grid step")
    parser.add_argument("--task-duration", type=float, default=5.0, help="seconds a task runs")
    parser.add_argument(
        "--materialize-interval", type=float, default=2.0, help="materialization cron interval, s (0: off)"
    )
    parser.add_argument("--action-delay", type=float, default=0.5, help="seconds per /actions/* step")
    parser.add_argument(
        "--fail-task",
        action="append",
        default=[],
        metavar="NAME[=P]",
        help="tasks with this name fail (with probability P, default 1); repeatable",
    )
    parser.add_argument("--service-client-secret", help="secret of the confidential client (default: random)")
    parser.add_argument(
        "--issue-token",
        metavar="USER",
        help="also print a refresh token for USER and a ready AIRFLOW_CONN_* JSON ('airflow_connection')",
    )
    return parser


def _fail_tasks(specs: list[str]) -> dict[str, float]:
    out = {}
    for spec in specs:
        name, _, prob = spec.partition("=")
        out[name] = float(prob) if prob else 1.0
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in until SIGINT/SIGTERM. Returns the exit code."""
    args = build_parser().parse_args(argv)
    from airflow_provider_iceprod.testing.server import LocalIceProd

    server = LocalIceProd(
        port=args.port,
        auto_approve_as=args.auto_approve_as,
        rotate_refresh_tokens=args.rotate_refresh_tokens,
        token_lifetime=args.token_lifetime,
        device_interval=args.device_interval,
        grid_tick=args.grid_tick,
        task_duration=args.task_duration,
        materialize_interval=args.materialize_interval or None,
        action_delay=args.action_delay,
        fail_tasks=_fail_tasks(args.fail_task),
        service_client_secret=args.service_client_secret,
    )
    for option, user in (("--issue-token", args.issue_token), ("--auto-approve-as", args.auto_approve_as)):
        if user is not None and user not in server.usernames:
            build_parser().error(f"{option}: unknown user {user!r} (known: {', '.join(server.usernames)})")
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with server:
            data: dict[str, str] = server.info()
            if args.issue_token:
                token = server.issue_refresh_token(args.issue_token)
                data["refresh_token"] = token
                data["airflow_connection"] = json.dumps(
                    {"conn_type": "iceprod", "host": server.api_url, "extra": server.connection_extra(token)}
                )
            info = json.dumps(data)
            if args.write_json:
                path = Path(args.write_json)
                path.parent.mkdir(parents=True, exist_ok=True)
                # It holds a refresh token and the client secret: 0600, also when the file existed.
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "w") as handle:
                    handle.write(info + "\n")
            print(info, flush=True)
            print(
                f"IceProd stand-in serving at {server.api_url} (Ctrl-C to stop)", file=sys.stderr, flush=True
            )
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
