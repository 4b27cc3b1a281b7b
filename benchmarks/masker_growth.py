"""Does a process slow down as it ages? Refresh time, masker size and memory over many refreshes.

One process refreshes a rotating refresh token ``--refreshes`` times against the local stand-in (real
HTTP), registering every new token with Airflow's secret masker the provider's way (bounded per
credential, :mod:`airflow_provider_iceprod.auth.masking`). Side by side, a ``--baseline`` run registers
the same tokens with Airflow's plain ``mask_secret`` (what the provider did before): the masker keeps
every secret and recompiles one regex of all of them on each add.

    python benchmarks/masker_growth.py [--refreshes 10000] [--baseline 300] [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import replace_section


def _rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: peak instead of current
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(refreshes: int, *, bounded: bool, checkpoints: int = 5) -> list[tuple[int, float, int, float]]:
    """[(refreshes done, mean ms per refresh in the last window, masker patterns, RSS MB)]."""
    from airflow.sdk.log import _secrets_masker, mask_secret

    from airflow_provider_iceprod.auth.cache import TOKEN_CACHE
    from airflow_provider_iceprod.auth.provider import TokenProvider
    from airflow_provider_iceprod.auth.state import MemoryTokenStateStore
    from airflow_provider_iceprod.retry import RetrySettings
    from airflow_provider_iceprod.settings import ConnectionSettings
    from airflow_provider_iceprod.testing import LocalIceProd

    masker = _secrets_masker()
    masker.reset_masker()
    TOKEN_CACHE.clear()
    rows = []
    with LocalIceProd(rotate_refresh_tokens=True, materialize_interval=None) as ip:
        fields = ip.connection_extra(ip.issue_refresh_token("alice"))
        settings = ConnectionSettings.from_fields("iceprod_bench_mask", ip.api_url, None, fields)
        provider = TokenProvider(
            settings, retry=RetrySettings(timeout=30.0), state_store=MemoryTokenStateStore()
        )
        if not bounded:  # what the provider did before: every secret to the masker, forever
            provider._mask_grant = lambda grant: [mask_secret(s) for s in grant.secrets()]  # type: ignore[method-assign]
        provider.get_token()
        window = max(refreshes // checkpoints, 1)
        started = time.perf_counter()
        for i in range(1, refreshes + 1):
            provider.get_token(force_refresh=True)
            if i % window == 0 or i == refreshes:
                now = time.perf_counter()
                rows.append((i, (now - started) / window * 1000, len(masker.patterns), _rss_mb()))
                started = now
    return rows


def _table(title: str, rows: list[tuple[int, float, int, float]]) -> list[str]:
    lines = [
        f"**{title}**",
        "",
        "| refreshes | ms per refresh (last window) | masker patterns | RSS MB |",
        "|---:|---:|---:|---:|",
    ]
    lines += [f"| {n:,} | {ms:.1f} | {patterns:,} | {rss:.0f} |" for n, ms, patterns, rss in rows]
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refreshes", type=int, default=10_000)
    parser.add_argument("--baseline", type=int, default=300, help="refreshes of the unbounded run")
    parser.add_argument("--write", type=Path, help="update this Markdown file's 'Masker growth' section")
    args = parser.parse_args(argv)
    os.environ.setdefault("AIRFLOW_ICEPROD_LOCK_DIR", tempfile.mkdtemp(prefix="iceprod-bench-locks-"))
    bounded = run(args.refreshes, bounded=True, checkpoints=10)
    baseline = run(args.baseline, bounded=False, checkpoints=5) if args.baseline else []
    lines = _table(f"Provider (bounded per credential), {args.refreshes:,} refreshes", bounded)
    if baseline:
        lines += _table(
            f"Before (Airflow's mask_secret for every token), {args.baseline:,} refreshes", baseline
        )
        lines.append(
            f"After {baseline[-1][0]:,} refreshes the unbounded masker holds {baseline[-1][2]:,} patterns and "
            f"a refresh takes {baseline[-1][1]:.0f} ms; the bounded one holds {bounded[-1][2]:,} after "
            f"{bounded[-1][0]:,} refreshes at {bounded[-1][1]:.0f} ms. Each refresh still recompiles the "
            "masker's regex once, over a bounded set of patterns; a trigger's refresh does it in a worker "
            "thread, never on the event loop."
        )
    print("\n".join(lines))
    if args.write:
        replace_section(
            args.write, "Masker growth", "\n".join(lines), command="python benchmarks/masker_growth.py"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
