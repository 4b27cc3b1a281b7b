"""Asset watchers on IceProd: polling cost for 1, 10 and 100 watchers, and the delivery delay.

The local IceProd stand-in runs in this process (its own thread) with a realistic backlog of
datasets (most complete, some running, several groups). ``IceProdDatasetEventTrigger.run()``
generators run in the main event loop as a triggerer runs them, with different filters (group,
owner, description pattern, statuses); they share the connection's poller.

1. **Polling cost**: IceProd requests per poll interval in steady state (counted by the stand-in),
   for 1, 10 and 100 watchers.
2. **Delivery delay**: with 100 watchers, datasets are created and finish one after another; the
   delay is from the moment the stand-in marks a dataset ``complete`` (seen by a 5 ms probe) to the
   moment the first and the last of its watchers yield the event. Also the requests it took.

    python benchmarks/event_watchers.py [--interval 1.0] [--intervals 10] [--backlog 500]
                                        [--finishing 5] [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

CONFIG = {"version": 3.2, "tasks": [{"name": "generate", "trays": [{"modules": [{"src": "/usr/bin/true"}]}]}]}
WARMUP_INTERVALS = 3
WATCHER_COUNTS = (1, 10, 100)
#: Filters cycled over the watchers; every one of them matches the finishing datasets.
FILTERS: list[dict[str, Any]] = [
    {"group": "simprod", "description": "IceCube-2026*"},
    {"owner": "alice"},
    {"group": ["simprod", "filtering"], "status": ["complete", "errors"]},
    {"description": "*muon*"},
    {"owner": ["alice", "bob"], "group": "simprod", "status": ["complete", "suspended", "errors"]},
]


class MemoryAssetStore:
    """Stands in for the asset state store the triggerer gives each watcher (a dict here)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def aget(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        self.data[key] = json.loads(json.dumps(value))  # the JSON round trip a real store makes


class Watchers:
    """N event triggers run as a triggerer runs them; records when each event arrives."""

    def __init__(self, n: int, interval: float) -> None:
        from airflow_provider_iceprod.triggers.events import IceProdDatasetEventTrigger

        self.triggers = [
            IceProdDatasetEventTrigger(poll_interval=interval, **FILTERS[i % len(FILTERS)]) for i in range(n)
        ]
        for trigger in self.triggers:
            trigger.asset_state_store = MemoryAssetStore()  # type: ignore[assignment]
        self.arrivals: dict[str, list[tuple[int, float]]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def _consume(self, index: int, trigger: Any) -> None:
        async for event in trigger.run():
            self.arrivals.setdefault(event.payload["dataset_id"], []).append((index, time.monotonic()))

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._consume(i, t)) for i, t in enumerate(self.triggers)]

    def duplicates(self) -> int:
        return sum(len(a) - len({i for i, _ in a}) for a in self.arrivals.values())

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def api_requests(routes: dict[str, int]) -> int:
    return sum(n for route, n in routes.items() if "/auth/realms/" not in route)


async def polling_cost(ip: Any, n: int, args: argparse.Namespace) -> dict[str, Any]:
    from airflow_provider_iceprod.triggers.poller import active_pollers

    watchers = Watchers(n, args.interval)
    watchers.start()
    await asyncio.sleep(WARMUP_INTERVALS * args.interval)  # first start: token, lists, baselines
    (poller,) = active_pollers()
    ticks = poller.ticks
    while poller.ticks == ticks:  # measure from a tick boundary
        await asyncio.sleep(0.005)
    ip.reset_counters()
    ticks = poller.ticks
    while poller.ticks < ticks + args.intervals:
        await asyncio.sleep(0.005)
    routes = ip.counters.snapshot()["routes"]
    await watchers.stop()
    return {
        "watchers": n,
        "feeds": poller.feeds,
        "requests_per_interval": api_requests(routes) / args.intervals,
        "routes_per_interval": {
            r: c / args.intervals for r, c in sorted(routes.items()) if "/auth/" not in r
        },
        "events": sum(len(v) for v in watchers.arrivals.values()),
    }


async def delivery_delay(ip: Any, args: argparse.Namespace) -> dict[str, Any]:
    n = WATCHER_COUNTS[-1]
    watchers = Watchers(n, args.interval)
    watchers.start()
    await asyncio.sleep(WARMUP_INTERVALS * args.interval)
    ip.reset_counters()
    completed: dict[str, float] = {}
    first: list[float] = []
    last: list[float] = []
    started = time.monotonic()
    for i in range(args.finishing):
        ip.grid.task_duration = 1.5 * args.interval  # seen running first, as real datasets are
        dataset_id = ip.create_dataset(
            CONFIG, group="simprod", description=f"IceCube-2026 muon bench {i}", materialize=True
        )
        while ip.dataset(dataset_id)["status"] != "complete":
            await asyncio.sleep(0.005)
        completed[dataset_id] = time.monotonic()
        while len(watchers.arrivals.get(dataset_id, ())) < n:
            if time.monotonic() - completed[dataset_id] > 30 * args.interval:
                raise RuntimeError(
                    f"only {len(watchers.arrivals.get(dataset_id, ()))} of {n} watchers reported"
                )
            await asyncio.sleep(0.005)
        arrivals = [t for _, t in watchers.arrivals[dataset_id]]
        first.append(min(arrivals) - completed[dataset_id])
        last.append(max(arrivals) - completed[dataset_id])
    elapsed = time.monotonic() - started
    routes = ip.counters.snapshot()["routes"]
    await asyncio.sleep(3 * args.interval)  # nothing more arrives
    duplicates = watchers.duplicates()
    await watchers.stop()
    return {
        "watchers": n,
        "datasets": args.finishing,
        "first_mean_s": statistics.mean(first),
        "first_max_s": max(first),
        "last_mean_s": statistics.mean(last),
        "last_max_s": max(last),
        "duplicates": duplicates,
        "requests": api_requests(routes),
        "elapsed_intervals": elapsed / args.interval,
        "routes": {r: c for r, c in sorted(routes.items()) if "/auth/" not in r},
    }


async def run(ip: Any, args: argparse.Namespace) -> dict[str, Any]:
    costs = [await polling_cost(ip, n, args) for n in WATCHER_COUNTS]
    for cost in costs:
        print(
            f"{cost['watchers']} watchers: {cost['requests_per_interval']:.2f} requests per interval",
            flush=True,
        )
    delay = await delivery_delay(ip, args)
    print(f"delay: {json.dumps({k: v for k, v in delay.items() if k != 'routes'})}", flush=True)
    return {"costs": costs, "delay": delay}


def seed(ip: Any, backlog: int) -> None:
    """A backlog like IceProd's: most datasets complete, some running, several groups and owners."""
    groups = ("simprod", "filtering", "users")
    for i in range(backlog):
        running = i % 10 == 0
        ip.create_dataset(
            CONFIG,
            group=groups[i % 3],
            username=("alice", "bob")[i % 2],
            description=f"{'IceCube-2026' if i % 4 else 'Level2'} backlog {i}",
            status="processing" if running else "complete",  # running ones have no jobs: they stay so
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval, seconds")
    parser.add_argument("--intervals", type=int, default=10, help="steady-state intervals measured")
    parser.add_argument("--backlog", type=int, default=500, help="datasets already in IceProd")
    parser.add_argument("--finishing", type=int, default=5, help="datasets finishing in the delay run")
    parser.add_argument("--write", type=Path, help="write the results into this performance.md")
    args = parser.parse_args()

    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="iceprod-bench-"))
    logging.basicConfig(level=logging.ERROR)
    import structlog

    from airflow_provider_iceprod.testing import LocalIceProd
    from airflow_provider_iceprod.triggers import events, poller  # noqa: F401  (imports before timing)

    # Airflow logs through structlog: keep the per-event log lines of 100 watchers out of the output
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

    started = time.monotonic()
    with LocalIceProd(
        grid_tick=0.05, task_duration=3600.0, materialize_interval=None, token_lifetime=3600
    ) as ip:
        os.environ["AIRFLOW_CONN_ICEPROD_DEFAULT"] = ip.airflow_connection_json(username="alice")
        seed(ip, args.backlog)
        results = asyncio.run(run(ip, args))
    elapsed = time.monotonic() - started
    if args.write:
        from _report import replace_section

        replace_section(
            args.write,
            "Asset watchers",
            render(results, args, elapsed),
            command="python benchmarks/event_watchers.py --write docs/performance.md",
        )
        print(f"wrote {args.write}")


def render(results: dict[str, Any], args: argparse.Namespace, elapsed: float) -> str:
    costs, d = results["costs"], results["delay"]
    lines = [
        f"`IceProdDatasetEventTrigger` watchers in one event loop against the local stand-in (its own "
        f"thread in the same process) holding {args.backlog:,} datasets (90 % complete, three groups, two "
        f"owners), poll interval {args.interval:g} s, {args.intervals} steady-state intervals measured after "
        f"a {WARMUP_INTERVALS}-interval warm-up. The watchers cycle through {len(FILTERS)} different filters "
        "(group, owner, description pattern, statuses).",
        "",
        "| Watchers | IceProd requests per poll interval (steady state) | By route |",
        "| ---: | ---: | --- |",
    ]
    for c in costs:
        routes = ", ".join(f"`{r}` {v:.1f}" for r, v in c["routes_per_interval"].items())
        lines.append(f"| {c['watchers']} | {c['requests_per_interval']:.2f} | {routes} |")
    lines += [
        "",
        f"Delivery delay with {d['watchers']} watchers, {d['datasets']} datasets finishing one after another "
        "(from the stand-in marking a dataset `complete` to the event):",
        "",
        "| Figure | Mean | Max |",
        "| --- | ---: | ---: |",
        f"| First watcher's event, s | {d['first_mean_s']:.2f} | {d['first_max_s']:.2f} |",
        f"| Last of the {d['watchers']} watchers' events, s | {d['last_mean_s']:.2f} | {d['last_max_s']:.2f} |",
        "",
        f"Duplicate events: {d['duplicates']}. IceProd requests while the {d['datasets']} datasets ran and "
        f"finished ({d['elapsed_intervals']:.0f} intervals, {d['watchers']} watchers): {d['requests']} "
        "(" + ", ".join(f"`{r}` {v}" for r, v in d["routes"].items()) + ").",
        "",
        "How to read it:",
        "",
        "* Steady state is one `GET /datasets` (`processing|suspended|errors`, `keys` projection) per "
        "interval, whatever the number of watchers: they are feeds of the connection's shared poller. "
        "The list is filtered by `users`/`groups` only on a field every watcher constrains.",
        "* A finished dataset leaves that list; the same interval the poller lists `status=complete` once "
        "for every watcher, and the dataset's final job and task counts are fetched once (two requests), "
        "not once per watcher. Every 30 intervals the complete list is also fetched, for datasets that "
        "were born and finished between two polls.",
        "* The delay is at most about one poll interval plus three requests; the default interval is "
        "60 s, so expect up to a minute (IceProd's own `dataset_completion` cron adds its own lag before "
        "the status changes at all).",
        f"* The whole benchmark took {elapsed:.0f} s.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
