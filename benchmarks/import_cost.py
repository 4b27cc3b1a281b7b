"""Import cost of the provider's Airflow-facing modules over a bare ``import airflow.sdk``.

Each sample runs in a fresh interpreter: it imports ``airflow.sdk`` first, then times the module
under test, so the figure is what the module adds on top of what every DAG file already pays.
The median of several samples is reported, side by side with dbt Cloud's operator module when the
dbt Cloud provider is installed in the same environment.

    python benchmarks/import_cost.py [--samples 9] [--write docs/performance.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import replace_section

MODULES = [
    "airflow_provider_iceprod.operators",
    "airflow_provider_iceprod.sensors",
    "airflow_provider_iceprod.hooks",
    "airflow_provider_iceprod.operators.submit",
    "airflow_provider_iceprod.hooks.iceprod",
]
DBT_MODULE = "airflow.providers.dbt.cloud.operators.dbt"
HEAVY = ["tornado", "requests_futures", "qrcode", "jsonschema", "rest_tools"]

PROBE = """
import sys, time
import airflow.sdk
before = set(sys.modules)
t0 = time.perf_counter()
import {module}
elapsed = time.perf_counter() - t0
heavy = [m for m in {heavy!r} if m in sys.modules and m not in before]
print(elapsed, ",".join(heavy))
"""


def sample(module: str) -> tuple[float, str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return float(out[0]), (out[1] if len(out) > 1 else "")


def measure(module: str, samples: int) -> tuple[float, str]:
    times = []
    heavy = ""
    for _ in range(samples):
        elapsed, heavy = sample(module)
        times.append(elapsed)
    return statistics.median(times) * 1000.0, heavy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=9)
    parser.add_argument("--write", type=Path, help="update this Markdown file's 'Import cost' section")
    args = parser.parse_args(argv)

    modules = list(MODULES)
    if importlib.util.find_spec("airflow.providers.dbt") is not None:
        modules.append(DBT_MODULE)
    rows = []
    for module in modules:
        ms, heavy = measure(module, args.samples)
        rows.append((module, ms, heavy))
        print(f"{module:50s} {ms:8.1f} ms  heavy modules loaded: {heavy or 'none'}")

    lines = [
        f"Median of {args.samples} fresh interpreters; time added on top of `import airflow.sdk`. "
        "Target: `airflow_provider_iceprod.operators` adds at most 30 ms.",
        "",
        "| module | added import time (ms) | heavy modules it pulls in |",
        "| --- | ---: | --- |",
    ]
    lines += [f"| `{m}` | {ms:.1f} | {heavy or 'none'} |" for m, ms, heavy in rows]
    if DBT_MODULE not in modules:
        lines += ["", f"`{DBT_MODULE}` was not installed in this environment, so it is not measured."]
    if args.write:
        replace_section(
            args.write, "Import cost", "\n".join(lines), command="python benchmarks/import_cost.py"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
