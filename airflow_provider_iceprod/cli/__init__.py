"""``airflow-iceprod``: log in to IceProd and manage the tokens stored in an Airflow connection.

Subcommands::

    airflow-iceprod login   [--conn-id ID] [--api-url URL] [--oauth-url URL] [--client-id ID] [--from-file PATH]
                            [--airflow-url URL (--airflow-user U --airflow-password P | --airflow-token T)]
                            [--print {uri,json}] [--no-qr]
    airflow-iceprod status  [--conn-id ID] [--json]
    airflow-iceprod refresh [--conn-id ID]
    airflow-iceprod logout  [--conn-id ID] [--airflow-url URL ...]
    airflow-iceprod local-server ...   (the local IceProd stand-in; see docs/testing.md)

``login`` runs the OAuth device grant (PKCE, ``offline_access``), or imports a token saved by rest-tools
(``--from-file``), and writes the refresh token into the
connection: through Airflow's metadata DB (default; the CLI runs where Airflow is configured), through
Airflow's REST API (``--airflow-url``), or prints the connection (``--print``). ``status``, ``refresh``
and ``logout`` read the connection the way Airflow does (environment, secrets backends, metadata DB).

Exit codes: 0 success, 1 unexpected failure, 2 bad input or configuration, 3 authentication failed
(denied, expired or revoked), 4 a server could not be reached.

This CLI runs with metadata-DB access, so unlike tasks it uses Airflow's ORM: ``status`` and
``refresh`` refresh like any process and, when the issuer rotates the refresh token, write the overlay
Variable through the DB (they are not read-only). Module import stays light: Airflow,
httpx and qrcode are imported only by the subcommand that needs them.

Modules: ``common`` (exit codes, errors), ``stores`` (where connections live), ``token_state``
(the CLI's token-state store), ``output`` (what it prints), ``login`` and ``commands`` (the subcommands).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from airflow_provider_iceprod.cli.commands import cmd_logout, cmd_refresh, cmd_status
from airflow_provider_iceprod.cli.common import (
    AIRFLOW_TOKEN_ENV,
    DEFAULT_CONN_ID,
    EXIT_AUTH,
    EXIT_CONFIG,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_UNREACHABLE,
    PASSWORD_ENV,
    CliError,
)
from airflow_provider_iceprod.cli.login import cmd_login
from airflow_provider_iceprod.cli.stores import StoredConnection

__all__ = [
    "EXIT_AUTH",
    "EXIT_CONFIG",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "CliError",
    "StoredConnection",
    "build_parser",
    "main",
]


def _add_airflow_api_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Airflow REST API (instead of the metadata DB)")
    group.add_argument("--airflow-url", help="Airflow api-server base URL, e.g. http://localhost:8080")
    group.add_argument("--airflow-user", help="Airflow user (simple auth manager: POST /auth/token)")
    group.add_argument(
        "--airflow-password",
        help=f"Airflow password; visible to other users in `ps`: prefer ${PASSWORD_ENV}",
    )
    group.add_argument(
        "--airflow-token",
        help=f"an Airflow API JWT instead of user/password; visible in `ps`: prefer ${AIRFLOW_TOKEN_ENV}",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airflow-iceprod",
        description="Log in to IceProd and manage the tokens of an Airflow `iceprod` connection.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    login = sub.add_parser("login", help="device login; writes the refresh token into the connection")
    login.add_argument("--conn-id", default=DEFAULT_CONN_ID, help="connection id (default: %(default)s)")
    login.add_argument("--api-url", help="IceProd API URL (the connection's host)")
    login.add_argument("--oauth-url", help="OpenID issuer URL (Keycloak realm)")
    login.add_argument("--client-id", help="OAuth client id (default: iceprod-public)")
    login.add_argument("--actions-url", help="base URL of /actions/* when it is not the API URL")
    login.add_argument("--website-url", help="IceProd website URL, for links")
    login.add_argument("--print", choices=("uri", "json"), help="print the connection instead of saving it")
    login.add_argument("--no-qr", action="store_true", help="do not print a QR code")
    login.add_argument(
        "--from-file",
        metavar="PATH",
        help="import the refresh token saved by rest-tools' SavedDeviceGrantAuth (e.g. IceProd's "
        ".iceprod-auth) instead of a device login; it is checked with one refresh and never printed",
    )
    _add_airflow_api_args(login)
    login.set_defaults(func=cmd_login)

    status = sub.add_parser(
        "status",
        help="whose token, groups, expiry and age (no secret shown); refreshes the access token when "
        "needed, which with rotating refresh tokens saves the new one in the overlay",
    )
    status.add_argument("--conn-id", default=DEFAULT_CONN_ID)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    refresh = sub.add_parser("refresh", help="force a token refresh now and report it")
    refresh.add_argument("--conn-id", default=DEFAULT_CONN_ID)
    refresh.set_defaults(func=cmd_refresh)

    logout = sub.add_parser("logout", help="revoke the refresh token and remove it from Airflow")
    logout.add_argument("--conn-id", default=DEFAULT_CONN_ID)
    _add_airflow_api_args(logout)
    logout.set_defaults(func=cmd_logout)

    sub.add_parser("local-server", help="run the local IceProd stand-in (see `local-server --help`)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "local-server":
        from airflow_provider_iceprod.testing.cli import main as local_server_main

        return int(local_server_main(argv[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_CONFIG
    import logging

    logging.getLogger("rest_tools").setLevel(logging.WARNING)
    _warn_secret_arguments(args)
    return _run(args)


def _warn_secret_arguments(args: argparse.Namespace) -> None:
    """Secrets on the command line are visible to every user of the host (``ps``, /proc)."""
    for flag, attr, env in (
        ("--airflow-password", "airflow_password", PASSWORD_ENV),
        ("--airflow-token", "airflow_token", AIRFLOW_TOKEN_ENV),
    ):
        if getattr(args, attr, None):
            print(
                f"Warning: {flag} is visible to other users of this host (ps, /proc/<pid>/cmdline). "
                f"Set ${env} instead.",
                file=sys.stderr,
            )


def _run(args: argparse.Namespace) -> int:
    from airflow_provider_iceprod.exceptions import (
        IceProdAuthError,
        IceProdConfigError,
        IceProdError,
        IceProdTransientError,
    )

    out = sys.stdout
    try:
        return int(args.func(args, out))
    except (CliError, IceProdError) as exc:
        print(f"airflow-iceprod {args.command}: {exc}", file=sys.stderr)
        if isinstance(exc, CliError):
            return exc.code
        if isinstance(exc, IceProdAuthError):
            return EXIT_AUTH
        if isinstance(exc, IceProdConfigError):
            return EXIT_CONFIG
        if isinstance(exc, IceProdTransientError):
            return EXIT_UNREACHABLE
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"\nairflow-iceprod {args.command}: interrupted", file=sys.stderr)
        return 130
