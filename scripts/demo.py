"""`make demo`: the main job end to end against the local IceProd stand-in.

1. migrates the SQLite metadata DB in ./.airflow (AIRFLOW_HOME, git-ignored);
2. starts the local IceProd + OpenID Connect stand-in on 127.0.0.1 (auto-approving logins as "alice");
3. logs in with `airflow-iceprod login --print json` (the real OAuth device grant against the
   stand-in) and hands the connection to Airflow as AIRFLOW_CONN_ICEPROD_DEFAULT (the form
   `dag.test()` triggers can read; `login` without --print writes it into the metadata DB instead);
4. runs the example DAG `iceprod_submit_and_wait` (submit a dataset, then wait for it, deferrable);
5. prints what happened, read back from IceProd.

It never pretends: any missing piece or failure is printed and the demo exits non-zero.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOME = Path(os.environ.get("AIRFLOW_HOME", REPO / ".airflow"))
BIN = Path(sys.executable).parent
DAG_ID = "iceprod_submit_and_wait"


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def configure_airflow() -> None:
    os.environ["AIRFLOW_HOME"] = str(HOME)
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "example_dags")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{HOME / 'airflow.db'}"
    os.environ["AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"] = "True"
    # The demo's grid runs in seconds; poll accordingly (production defaults are minutes).
    os.environ["ICEPROD_EXAMPLE_POLL_INTERVAL"] = "1"
    os.environ["ICEPROD_EXAMPLE_JOBS"] = "3"
    HOME.mkdir(parents=True, exist_ok=True)


def migrate() -> None:
    step(f"Migrating the Airflow metadata DB in {HOME}")
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], check=True, capture_output=True)
    print("    done")


def login(ip: object) -> dict:
    step("Logging in with `airflow-iceprod login` (OAuth device grant, auto-approved by the stand-in)")
    cmd = [
        str(BIN / "airflow-iceprod"),
        "login",
        "--conn-id",
        "iceprod_default",
        "--api-url",
        ip.api_url,  # type: ignore[attr-defined]
        "--oauth-url",
        ip.issuer_url,  # type: ignore[attr-defined]
        "--website-url",
        ip.website_url,  # type: ignore[attr-defined]
        "--no-qr",
        "--print",
        "json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise SystemExit(f"login failed (exit {proc.returncode}):\n{proc.stderr}")
    conn_json = proc.stdout.strip().splitlines()[-1]
    print("    logged in; connection iceprod_default prepared (refresh token kept out of this output)")
    return json.loads(conn_json)


def run_dag() -> str:
    from airflow.dag_processing.dagbag import DagBag

    step(f"Running the example DAG {DAG_ID!r} with dag.test()")
    bag = DagBag(dag_folder=str(REPO / "example_dags"))
    if bag.import_errors:
        raise SystemExit(f"example DAGs failed to import: {bag.import_errors}")
    dag = bag.get_dag(DAG_ID)
    if dag is None:
        raise SystemExit(f"example DAG {DAG_ID!r} is missing")
    dag_run = dag.test()
    return str(dag_run.state)


def main() -> int:
    configure_airflow()
    try:
        from airflow_provider_iceprod.testing import LocalIceProd
    except ImportError as exc:
        print(f"MISSING: the local IceProd stand-in (airflow_provider_iceprod.testing): {exc}")
        return 1

    migrate()
    step("Starting the local IceProd stand-in on 127.0.0.1")
    with LocalIceProd(
        auto_approve_as="alice", device_interval=1, task_duration=2.0, materialize_interval=0.5
    ) as ip:
        print(f"    API {ip.api_url}\n    issuer {ip.issuer_url}")
        conn = login(ip)
        os.environ["AIRFLOW_CONN_ICEPROD_DEFAULT"] = json.dumps(conn)
        started = time.monotonic()
        state = run_dag()
        elapsed = time.monotonic() - started
        step("Result, read back from IceProd")
        for ds in ip.datasets():
            print(
                f"    dataset {ds['dataset']} ({ds['dataset_id']}): status {ds['status']}, "
                f"{ds['jobs_submitted']} jobs, description {ds['description']!r}"
            )
        print(f"    DAG run state: {state} after {elapsed:.1f} s")
        print(f"    requests served: {ip.counters.total()}, token grants: {dict(ip.counters.grants)}")
    if state != "success":
        print("DEMO FAILED: the DAG run did not succeed (see the task logs above).")
        return 1
    print("\nDemo complete: logged in, submitted a dataset, waited for it to complete.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
