"""Requests per second the local IceProd stand-in serves on one CPU core.

The stand-in runs as ``airflow-iceprod local-server`` (here through
``python -m airflow_provider_iceprod.testing.cli``) in its own process, pinned to one core where
the OS allows it; this process sends a few hundred requests per scenario over keep-alive
connections and reports requests per second.

    python benchmarks/standin_throughput.py [--requests 600] [--clients 4] [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import replace_section

CONFIG = {"version": 3.2, "tasks": [{"name": "generate", "trays": [{"modules": [{"src": "/usr/bin/true"}]}]}]}


def start_server(workdir: Path) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    info_file = workdir / "standin.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "airflow_provider_iceprod.testing.cli", "--write-json", str(info_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not info_file.exists() or not info_file.read_text().strip():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the stand-in did not start")
        time.sleep(0.05)
    return proc, json.loads(info_file.read_text())


def pin_to_one_core(pid: int) -> str:
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned (no sched_setaffinity on this OS)"
    cpus = sorted(os.sched_getaffinity(0))
    server_cpu = cpus[0]
    os.sched_setaffinity(pid, {server_cpu})
    if len(cpus) > 1:  # keep the client off the server's core
        os.sched_setaffinity(0, set(cpus[1:]))
        return f"server pinned to CPU {server_cpu}, client on CPUs {cpus[1:]}"
    return f"server and client share CPU {server_cpu}"


def service_token(info: dict[str, str]) -> str:
    form = urllib.parse.urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": info["service_client_id"],
            "client_secret": info["service_client_secret"],
        }
    ).encode()
    with urllib.request.urlopen(f"{info['issuer_url']}/protocol/openid-connect/token", data=form) as resp:
        return str(json.load(resp)["access_token"])


class Client:
    """One keep-alive HTTP connection."""

    def __init__(self, base: str, token: str) -> None:
        parts = urllib.parse.urlsplit(base)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def request(self, method: str, path: str, body: object = None) -> tuple[int, bytes]:
        self.conn.request(method, path, body=None if body is None else json.dumps(body), headers=self.headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def close(self) -> None:
        self.conn.close()


def make_dataset(client: Client) -> str:
    body = {
        "description": "bench",
        "jobs_submitted": 1,
        "tasks_submitted": 1,
        "tasks_per_job": 1,
        "group": "users",
    }
    status, data = client.request("POST", "/datasets", body)
    assert status == 201, data
    dataset_id = str(json.loads(data)["result"])
    status, data = client.request("PUT", f"/config/{dataset_id}", CONFIG)
    assert status == 200, data
    return dataset_id


def run(
    base: str, token: str, requests: int, clients: int, call: Callable[[Client], tuple[int, bytes]]
) -> float:
    """Send ``requests`` requests split over ``clients`` threads; returns requests per second."""
    per_client = max(1, requests // clients)
    pool = [Client(base, token) for _ in range(clients)]
    for c in pool:  # open the connections before timing
        call(c)
    errors: list[str] = []

    def work(c: Client) -> None:
        for _ in range(per_client):
            status, data = call(c)
            if status >= 400:
                errors.append(f"{status} {data[:80]!r}")

    threads = [threading.Thread(target=work, args=(c,)) for c in pool]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for c in pool:
        c.close()
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[0]}")
    return per_client * clients / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="requests per scenario")
    parser.add_argument("--clients", type=int, default=4, help="concurrent keep-alive connections")
    parser.add_argument("--repeat", type=int, default=3, help="runs per scenario (the median is reported)")
    parser.add_argument(
        "--write", type=Path, help="update this Markdown file's 'Stand-in throughput' section"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        proc, info = start_server(Path(tmp))
        try:
            placement = pin_to_one_core(proc.pid)
            token = service_token(info)
            setup = Client(info["api_url"], token)
            dataset_id = make_dataset(setup)
            setup.close()
            scenarios: dict[str, Callable[[Client], tuple[int, bytes]]] = {
                "GET /healthz (no auth)": lambda c: c.request("GET", "/healthz"),
                "GET /datasets/{id} (bearer JWT)": lambda c: c.request("GET", f"/datasets/{dataset_id}"),
                "GET /datasets/{id}/task_counts/status": lambda c: c.request(
                    "GET", f"/datasets/{dataset_id}/task_counts/status"
                ),
                "PUT /datasets/{id}/priority": lambda c: c.request(
                    "PUT", f"/datasets/{dataset_id}/priority", {"priority": 0.7}
                ),
            }
            rows = []
            for name, call in scenarios.items():
                rates = [
                    run(info["api_url"], token, args.requests, args.clients, call) for _ in range(args.repeat)
                ]
                rows.append((name, statistics.median(rates), min(rates)))
        finally:
            proc.terminate()
            proc.wait(10)

    lines = [
        f"{args.requests} requests per run over {args.clients} keep-alive connections, median of "
        f"{args.repeat} runs; {placement}. Target: at least 500 requests/s on one core.",
        "",
        "| Scenario | Requests/s (median) | Slowest run |",
        "|---|---:|---:|",
    ]
    lines += [f"| `{name}` | {median:,.0f} | {low:,.0f} |" for name, median, low in rows]
    body = "\n".join(lines)
    print(body)
    if args.write:
        replace_section(
            args.write,
            "Stand-in throughput",
            body,
            command="python benchmarks/standin_throughput.py --write docs/performance.md",
        )
    slowest = min(low for _, _, low in rows)
    return 0 if slowest >= 500 else 1


if __name__ == "__main__":
    raise SystemExit(main())
