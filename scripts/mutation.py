"""``make mutation``: mutation testing (mutmut) of the modules where a silent break costs users most.

Each module is mutated on its own, against only its own tests (no coverage, ``-x``), in a scratch
directory ``.mutation/<name>/`` (git-ignored) with a generated ``pyproject.toml``, so the run fits a
2-core machine and a refactor only means editing :data:`MODULES`. mutmut itself then runs, for each
mutant, only the tests that execute the mutated function.

    python scripts/mutation.py                      # every module in MODULES that exists
    python scripts/mutation.py waiting auth.cache   # some of them
    python scripts/mutation.py --list               # the list, and which files are missing

Prints, per module, killed / survived / other and the score, the run time, and the survivors'
count per function (all names in ``.mutation/<module>/survivors.txt``; ``mutmut show <name>`` inside
``.mutation/<module>/`` prints the diff). Exit 1 when a
module scores below ``--target`` (default 90).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "airflow_provider_iceprod"

#: name -> (module path(s) under the package, test paths). Edit when modules move.
MODULES: dict[str, tuple[list[str], list[str]]] = {
    # the wait's verdicts
    "waiting": (["waiting.py"], ["tests/unit/test_waiting.py", "tests/unit/test_waiting_mutants.py"]),
    # the wait's progress lines and ETA, and the events a trigger hands to the task
    "wait_progress": (
        ["wait_progress.py"],
        ["tests/unit/test_waiting.py", "tests/unit/test_waiting_mutants.py"],
    ),
    "wait_events": (["wait_events.py"], ["tests/unit/test_waiting.py", "tests/unit/test_waiting_mutants.py"]),
    # the retry policy (pure; transport.py keeps the HTTP half)
    "retry": (["retry.py"], ["tests/unit/test_retry.py", "tests/unit/test_retry_mutants.py"]),
    # the token cache and the token state
    "auth.cache": (
        ["auth/cache.py"],
        ["tests/unit/auth/test_cache.py", "tests/unit/auth/test_cache_mutants.py"],
    ),
    "auth.tokens": (
        ["auth/tokens.py"],
        [
            "tests/unit/auth/test_tokens_mutants.py",
            "tests/unit/auth/test_state.py",
            "tests/unit/auth/test_provider.py",
        ],
    ),
    # which refresh token is used next (pure)
    "auth.candidates": (
        ["auth/candidates.py"],
        ["tests/unit/auth/test_candidates_mutants.py", "tests/unit/auth/test_provider.py"],
    ),
    "auth.state": (
        ["auth/state.py", "auth/state_stores.py"],
        [
            "tests/unit/auth/test_state_mutants.py",
            "tests/unit/auth/test_state.py",
            "tests/unit/auth/test_state_stores.py",
        ],
    ),
    # the checks (input validation before any request)
    "api.checks": (
        ["api/checks.py"],
        ["tests/unit/api/test_checks.py", "tests/unit/api/test_checks_mutants.py"],
    ),
    # the submit and reconcile flow (and the other multi-step flows)
    "api.submit_flow": (
        ["api/submit_flow.py"],
        ["tests/unit/api/test_submit_flow_mutants.py", "tests/unit/hooks/test_iceprod_submit.py"],
    ),
    "operators.resume": (
        ["operators/_resume.py"],
        [
            "tests/unit/operators/test_resume.py",
            "tests/unit/operators/test_resume_mutants.py",
            "tests/unit/operators/test_submit.py",
        ],
    ),
}

#: Tests that cannot pass on mutmut's copy: they check what a module imports, and mutmut's
#: trampolines import mutmut into every mutated module.
DESELECT = ["tests/unit/test_retry.py::test_retry_module_is_pure"]

#: Collected last by mutmut's fork server, so each mutant's process does not import Airflow anew.
WARMUP = "tests/helpers/mutation_warmup.py"

MUTMUT_STATUSES = ("killed", "survived", "no tests", "timeout", "suspicious", "skipped", "not checked")


def scratch_dir(name: str, sources: list[str], tests: list[str]) -> Path:
    """``.mutation/<name>/``: links to the package, tests and example DAGs, and a pyproject.toml."""
    work = ROOT / ".mutation" / name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for entry in (PACKAGE, "tests", "example_dags"):
        if (ROOT / entry).exists():
            (work / entry).symlink_to(ROOT / entry)
    deselect = [arg for test in DESELECT for arg in ("--deselect", test)]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pytest_options = dict(project["tool"]["pytest"]["ini_options"])
    pytest_options.pop("testpaths", None)
    lines = ["[tool.pytest.ini_options]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in pytest_options.items()]
    lines += [
        "",
        "[tool.mutmut]",
        f'source_paths = ["{PACKAGE}"]',
        f"only_mutate = {json.dumps([f'{PACKAGE}/{s}' for s in sources])}",
        f"pytest_add_cli_args_test_selection = {json.dumps([*tests, WARMUP])}",
        "pytest_add_cli_args = "
        + json.dumps(["-x", "-q", "-p", "no:cacheprovider", "-p", "no:cov", "-W", "ignore", *deselect]),
        'also_copy = ["tests", "example_dags", "pyproject.toml"]',
        "use_git_change_detection = false",
        # fork each mutant from a server that only collected the tests: with mutmut's default (fork from
        # the process that ran them), the thread pools of asgiref/asyncio are copied without their
        # threads, and every mutant reaching an `await _in_thread(...)` hangs until the time limit.
        'process_isolation = "forkserver"',
        # mutmut stops a mutant after 15 x (its tests' time + this) s of wall time and counts a
        # "timeout" as killed: 5 s instead of 1 s so a busy machine does not end a slow session
        # that would have passed (a mutant that really loops costs 75 s more).
        "timeout_constant = 5.0",
        "",
    ]
    (work / "pyproject.toml").write_text("\n".join(lines))
    return work


def results(work: Path, env: dict[str, str]) -> dict[str, list[str]]:
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    found: dict[str, list[str]] = {}
    for line in out.splitlines():
        if ":" not in line:
            continue
        mutant, _, status = line.strip().rpartition(":")
        found.setdefault(status.strip(), []).append(mutant.strip())
    return found


def run_module(name: str, max_children: int) -> dict[str, object] | None:
    sources, tests = MODULES[name]
    missing = [s for s in sources if not (ROOT / PACKAGE / s).exists()]
    missing += [t for t in tests if not (ROOT / t).exists()]
    if missing:
        print(f"== {name}: skipped, missing {missing}", flush=True)
        return None
    work = scratch_dir(name, sources, tests)
    # one pytest session per mutant: migrate the metadata DB once, copy it per session (tests/conftest.py)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", ICEPROD_TEST_DB_TEMPLATE=str(work / "template.db"))
    print(f"== {name}: mutating {sources} against {tests}", flush=True)
    started = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.monotonic() - started
    (work / "mutmut-run.log").write_text(run.stdout + run.stderr)
    found = results(work, env)
    killed = len(found.get("killed", [])) + len(found.get("timeout", []))
    survived = found.get("survived", []) + found.get("no tests", [])
    total = killed + len(survived)
    score = 100.0 * killed / total if total else 0.0
    print(
        f"   {killed} killed, {len(survived)} survived (of them {len(found.get('no tests', []))} with no "
        f"test), {sum(len(v) for k, v in found.items() if k not in ('killed', 'timeout', 'survived', 'no tests'))}"
        f" other; score {score:.1f} %; {seconds:.0f} s; log {work / 'mutmut-run.log'}",
        flush=True,
    )
    (work / "survivors.txt").write_text("".join(f"{m}\n" for m in survived))
    by_function: dict[str, int] = {}
    for mutant in survived:
        function = mutant.rsplit("__mutmut_", 1)[0].split(".")[-1]  # x_name or x<sep>Class<sep>name
        function = function[2:] if function.startswith("x_") else function[2:].replace(function[1], ".")
        by_function[function] = by_function.get(function, 0) + 1
    for function, n in sorted(by_function.items(), key=lambda item: -item[1]):
        print(f"   survivors in {function}: {n}")
    if run.returncode != 0 and not total:
        print(run.stdout[-3000:] + run.stderr[-3000:])
    return {"module": name, "killed": killed, "survived": survived, "score": score, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help=f"names from MODULES (default: all): {', '.join(MODULES)}")
    parser.add_argument("--list", action="store_true", help="show the modules and exit")
    parser.add_argument(
        "--max-children",
        type=int,
        default=1,
        help="parallel test processes (default 1: the machine is shared)",
    )
    parser.add_argument("--target", type=float, default=90.0, help="minimum score per module, percent")
    args = parser.parse_args(argv)
    if args.list:
        for name, (sources, tests) in MODULES.items():
            there = all((ROOT / PACKAGE / s).exists() for s in sources)
            print(f"{name:18} {'' if there else '(missing) '}{sources} <- {tests}")
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; known: {list(MODULES)}")
    started = time.monotonic()
    done = [r for r in (run_module(m, args.max_children) for m in args.modules or MODULES) if r]
    print(f"== total {time.monotonic() - started:.0f} s, {time.strftime('%Y-%m-%d')}")
    low = [r["module"] for r in done if float(r["score"]) < args.target]  # type: ignore[arg-type]
    if low:
        print(f"below {args.target:g} %: {low}")
    return 1 if low or not done else 0


if __name__ == "__main__":
    sys.exit(main())
