"""Token-endpoint requests per API call: the provider's hook next to rest-tools' ``OpenIDRestClient``.

Scenarios (all against the local IceProd stand-in, real HTTP, one run):

* one process making ``--calls`` authenticated API calls spread over two access-token lifetimes;
* one process whose calls are spread over ``--clients`` hooks (or rest-tools clients), as the tasks and
  triggers of one worker or triggerer are;
* ``--processes`` processes doing the same at once (each its own cache, as Airflow workers).

Access tokens live ``--lifetime`` seconds (a scaled-down hour). The provider's lead time is scaled by
the same factor as the lifetime (``--lead``; default: 120 s of a 3600 s token). rest-tools refreshes
5 s before expiry (fixed in its code) and refreshes twice when a client is built, so the lifetime
default of 20 s keeps its 5 s margin from dominating. Counts come from the stand-in's grant counters.

    python benchmarks/token_grants.py [--calls 1000] [--lifetime 20] [--processes 8] [--clients 10]
                                      [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parent.parent
CONN_ID = "iceprod_bench"

WORKER = r"""
import json, os, sys, time
from pathlib import Path

kind, calls, duration, lead, go = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
n_clients = int(sys.argv[6])
info = json.loads(os.environ["BENCH_INFO"])
clients = {}

if kind == "provider":
    from airflow_provider_iceprod.auth.provider import TokenProvider
    from airflow_provider_iceprod.hooks.iceprod import IceProdHook

    def call(i):
        hook = clients.get(i)
        if hook is None:  # one hook per task/trigger, built in the measured window
            hook = clients[i] = IceProdHook(os.environ["BENCH_CONN_ID"])
            hook.__dict__["token_provider"] = TokenProvider(hook.settings, retry=hook.retry_settings, lead_time=lead)
        hook.list_datasets(keys="dataset_id")
else:
    import logging
    logging.getLogger("rest_tools").setLevel(logging.WARNING)
    from rest_tools.client import OpenIDRestClient

    def call(i):
        client = clients.get(i)
        if client is None:  # built in the measured window: its construction grants count
            client = clients[i] = OpenIDRestClient(
                info["api_url"], info["issuer_url"], info["refresh_token"], info["public_client_id"], retries=0
            )
        client.request_seq("GET", "/datasets", {"keys": "dataset_id"})

while not Path(go).exists():
    time.sleep(0.01)
start = time.monotonic()
errors = 0
for i in range(calls):
    target = start + duration * i / calls
    pause = target - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    try:
        call(i % n_clients)
    except Exception as exc:
        errors += 1
        if errors == 1:
            print(f"first error: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
print(json.dumps({"calls": calls, "errors": errors, "seconds": time.monotonic() - start}))
"""


def _run(kind: str, n_procs: int, n_clients: int, args: argparse.Namespace) -> dict[str, float]:
    from airflow_provider_iceprod.testing import LocalIceProd

    with LocalIceProd(token_lifetime=args.lifetime, materialize_interval=None) as ip:
        info = {**ip.info(), "refresh_token": ip.issue_refresh_token("alice")}
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
        env.update(
            {
                "BENCH_INFO": json.dumps(info),
                "BENCH_CONN_ID": CONN_ID,
                f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(
                    {
                        "conn_type": "iceprod",
                        "host": ip.api_url,
                        "extra": ip.connection_extra(info["refresh_token"]),
                    }
                ),
                "AIRFLOW_ICEPROD_LOCK_DIR": "off",
            }
        )
        duration = 2 * args.lifetime
        with tempfile.TemporaryDirectory() as tmp:
            go = Path(tmp) / "go"
            procs = [
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        WORKER,
                        kind,
                        str(args.calls),
                        str(duration),
                        str(args.lead),
                        str(go),
                        str(n_clients),
                    ],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(n_procs)
            ]
            _wait_until_idle(procs)
            ip.reset_counters()
            go.touch()
            outs = [p.communicate(timeout=duration * 10 + 120) for p in procs]
        results = []
        for (out, err), proc in zip(outs, procs, strict=True):
            if proc.returncode != 0 or not out.strip():
                raise RuntimeError(f"{kind} worker failed ({proc.returncode}): {err[-2000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        grants = ip.counters.grant_requests.get("refresh_token", 0)
        return {
            "processes": n_procs,
            "clients": n_clients,
            "calls": sum(r["calls"] for r in results),
            "errors": sum(r["errors"] for r in results),
            "grants": grants,
            "seconds": max(r["seconds"] for r in results),
            "lifetimes": max(r["seconds"] for r in results) / args.lifetime,
        }


def _wait_until_idle(procs: list[subprocess.Popen[str]], timeout: float = 180.0) -> None:
    """Wait until every worker has finished importing (its CPU use drops) before starting the clock."""
    import psutil

    deadline = time.monotonic() + timeout
    time.sleep(1.0)
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return
        if all(psutil.Process(p.pid).cpu_percent(0.3) < 5 for p in procs):
            return


def _table(rows: list[tuple[str, str, dict[str, float]]]) -> str:
    lines = [
        "| Scenario | Client | API calls | Errors | Token-endpoint requests | "
        "Refreshes per process per lifetime, after the first token |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for scenario, client, r in rows:
        after_first = (r["grants"] / r["processes"] - 1) / max(r["lifetimes"], 1e-9)
        lines.append(
            f"| {scenario} | {client} | {int(r['calls'])} | {int(r['errors'])} | {int(r['grants'])} | "
            f"{after_first:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1000, help="API calls per process (default: 1000)")
    parser.add_argument("--lifetime", type=float, default=20.0, help="access-token lifetime, s (default: 20)")
    parser.add_argument(
        "--lead", type=float, default=None, help="provider lead time, s (default: scaled 120/3600)"
    )
    parser.add_argument(
        "--processes", type=int, default=8, help="processes in the multi-process run (default: 8)"
    )
    parser.add_argument("--clients", type=int, default=10, help="hooks/clients in one process (default: 10)")
    parser.add_argument("--write", type=Path, help="write the results into this Markdown file's section")
    args = parser.parse_args(argv)
    if args.lead is None:
        args.lead = 120.0 * args.lifetime / 3600.0

    rows: list[tuple[str, str, dict[str, float]]] = []
    scenarios = [
        ("1 process", 1, 1),
        (f"1 process, {args.clients} hooks/clients (tasks, triggers)", 1, args.clients),
        (f"{args.processes} processes", args.processes, 1),
    ]
    for scenario, n_procs, n_clients in scenarios:
        for kind, label in (
            ("provider", "airflow-provider-iceprod hook"),
            ("rest_tools", "rest-tools OpenIDRestClient"),
        ):
            result = _run(kind, n_procs, n_clients, args)
            rows.append((scenario, label, result))
            print(f"{scenario:40} {label:32} {json.dumps(result)}", flush=True)

    table = _table(rows)
    print()
    print(table)
    if args.write:
        from _report import replace_section

        body = (
            f"Token-endpoint requests (refresh grants, counted by the stand-in's issuer) for {args.calls} "
            f"authenticated API calls per process, spread evenly over two access-token lifetimes "
            f"(lifetime {args.lifetime:g} s standing in for one hour; the provider's 120 s lead time scaled "
            f"to {args.lead:.2f} s). Every process starts cold, as an Airflow worker does; the clock starts "
            "once all processes have finished importing.\n\n"
            f"{table}\n\n"
            "The provider mints a token on the first call and then refreshes once per lifetime, just before "
            "expiry (two lifetimes: up to three grants per process; the third falls at the very end of the "
            "window, so some processes finish just before it), and every hook and trigger in a process shares "
            "that token, so ten hooks cost what one does. rest-tools' `OpenIDRestClient` spends two refreshes "
            "each time a client is built (construction refreshes and discards the token, and the first request "
            "refreshes again) and then refreshes at a fixed 5 s before expiry "
            f"({5 / args.lifetime:.0%} of this scaled lifetime, negligible for a real hour-long token); its "
            "clients share nothing, so every task or trigger that builds one pays again. It also has no "
            "refresh lock (threads in one process refresh in parallel; not measured here). With single-use "
            "refresh tokens, processes sharing one refresh token need the provider's overlay and host lock; "
            "see [Connection and login](connection.md).\n"
        )
        replace_section(
            args.write,
            "Token grants",
            body,
            command="python benchmarks/token_grants.py --write docs/performance.md",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
