"""``airflow-iceprod``: real subprocesses, a real migrated SQLite metadata DB, the stand-in's issuer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_iceprod.testing import LocalIceProd

BIN = Path(sys.executable).parent
CLI = str(BIN / "airflow-iceprod")

pytestmark = pytest.mark.timeout(180)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> Result:
    """Run ``airflow-iceprod`` in this process (cheap: Airflow is already imported)."""
    from airflow_provider_iceprod.cli import main

    capsys.readouterr()
    code = main(args)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


@pytest.fixture
def ip() -> Iterator[LocalIceProd]:
    with LocalIceProd(
        auto_approve_as="alice", device_interval=0.2, rotate_refresh_tokens=True, materialize_interval=None
    ) as server:
        yield server


def run(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def db_connection(conn_id: str) -> dict[str, Any] | None:
    from airflow.models import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        conn = session.scalar(select(Connection).where(Connection.conn_id == conn_id))
        if conn is None:
            return None
        return {"host": conn.host, "conn_type": conn.conn_type, "extra": conn.extra_dejson}


def db_variable(key: str) -> str | None:
    from airflow.models import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalar(select(Variable).where(Variable.key == key))
        return None if row is None else row.val


def put_db_connection(ip: LocalIceProd, conn_id: str, username: str = "alice") -> str:
    """A logged-in connection written straight into the DB (what `login` does, without the device flow)."""
    from airflow.models import Connection, Variable
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    token = ip.issue_refresh_token(username)
    with create_session() as session:
        session.execute(delete(Connection).where(Connection.conn_id == conn_id))
        session.execute(delete(Variable).where(Variable.key == f"iceprod_token_state__{conn_id}"))
    with create_session() as session:
        session.add(
            Connection(
                conn_id=conn_id,
                conn_type="iceprod",
                host=ip.api_url,
                extra=json.dumps(ip.connection_extra(token)),
            )
        )
    return token


def login_args(ip: LocalIceProd, conn_id: str, *more: str) -> list[str]:
    return ["login", "--conn-id", conn_id, "--api-url", ip.api_url, "--oauth-url", ip.issuer_url, *more]


def test_import_is_light() -> None:
    code = (
        "import sys, airflow_provider_iceprod.cli as c\n"
        "heavy = [m for m in ('airflow.models', 'httpx', 'qrcode', 'tornado', 'rest_tools') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_login_writes_the_db_connection_and_a_dag_task_authenticates(
    ip: LocalIceProd, env: dict[str, str]
) -> None:
    conn_id = "iceprod_cli_e2e"
    proc = run(login_args(ip, conn_id, "--website-url", ip.website_url), env)
    assert proc.returncode == 0, proc.stderr
    assert f"{ip.issuer_url}/device" in proc.stdout
    assert "enter the code:" in proc.stdout
    assert "\u2588" in proc.stdout or "\u2580" in proc.stdout  # the QR code (block characters)
    assert "Logged in as alice" in proc.stdout
    assert ip.counters.grants["device_code"] == 1

    conn = db_connection(conn_id)
    assert conn is not None and conn["conn_type"] == "iceprod" and conn["host"] == ip.api_url
    extra = conn["extra"]
    assert extra["oauth_url"] == ip.issuer_url and extra["client_id"] == "iceprod-public"
    assert extra["website_url"] == ip.website_url
    assert ip.refresh_token_is_valid(extra["refresh_token"])
    assert abs(time.time() - float(extra["refresh_token_saved_at"])) < 120
    assert extra["refresh_token"] not in proc.stdout + proc.stderr

    # A DAG's task authenticates with that connection (dag.test: the task reads the connection and
    # writes the overlay Variable through the Execution API, in-process).
    script = (
        "import sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "bag = DagBag(sys.argv[1])\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "run = bag.get_dag('iceprod_token_keepalive').test(run_conf={'conn_id': sys.argv[2], 'max_login_age_days': 1})\n"
        "print('DAG_RUN_STATE=' + str(run.state))\n"
    )
    dags = str(Path(__file__).resolve().parents[3] / "example_dags")
    done = subprocess.run(
        [sys.executable, "-c", script, dags, conn_id], env=env, capture_output=True, text=True, timeout=170
    )
    assert "DAG_RUN_STATE=success" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
    assert ip.counters.grants["refresh_token"] == 1
    # single-use tokens: the connection's token is spent, the rotated one is in the overlay Variable
    assert not ip.refresh_token_is_valid(extra["refresh_token"])
    overlay = json.loads(db_variable(f"iceprod_token_state__{conn_id}") or "{}")
    assert ip.refresh_token_is_valid(overlay["refresh_token"])
    assert overlay["saved_at"] > float(extra["refresh_token_saved_at"])

    # and the CLI, reading the connection and the overlay, picks the newest token
    status = run(["status", "--conn-id", conn_id], env)
    assert status.returncode == 0, status.stderr
    assert "alice" in status.stdout and "token-state overlay" in status.stdout


@pytest.mark.parametrize("form", ["json", "uri"])
def test_login_print_does_not_touch_the_db(ip: LocalIceProd, env: dict[str, str], capsys, form: str) -> None:
    conn_id = f"iceprod_print_{form}"
    proc = cli(login_args(ip, conn_id, "--no-qr", "--print", form), capsys)
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout.strip().splitlines()[-1]
    if form == "json":
        doc = json.loads(printed)
        assert doc["conn_type"] == "iceprod" and doc["host"] == ip.api_url
        token = doc["extra"]["refresh_token"]
    else:
        from airflow.models import Connection

        token = Connection(conn_id=conn_id, uri=printed).extra_dejson["refresh_token"]
    assert ip.refresh_token_is_valid(token)
    assert db_connection(conn_id) is None


def test_login_denied_exits_non_zero(env: dict[str, str]) -> None:
    with LocalIceProd(device_interval=0.2, materialize_interval=None) as server:
        proc = subprocess.Popen(
            [CLI, *login_args(server, "iceprod_denied", "--no-qr")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert proc.stdout is not None
        code = None
        for line in proc.stdout:
            if "enter the code:" in line:
                code = line.rsplit(":", 1)[1].strip()
                break
        assert code, "no user code printed"
        server.idp.decide(code, username=None, approve=False)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 3, err
        assert "denied" in err and "airflow-iceprod login --conn-id iceprod_denied" in err
        assert db_connection("iceprod_denied") is None


def test_login_expired_code_exits_non_zero_in_bounded_time(env: dict[str, str], capsys) -> None:
    with LocalIceProd(device_interval=0.2, device_code_lifetime=2, materialize_interval=None) as server:
        started = time.monotonic()
        proc = cli(login_args(server, "iceprod_expired", "--no-qr"), capsys)
        assert time.monotonic() - started < 10
        assert proc.returncode == 3, proc.stderr
        assert "expired" in proc.stderr
        assert db_connection("iceprod_expired") is None


def test_login_unreachable_issuer_is_unreachable_not_a_config_error(env: dict[str, str], capsys) -> None:
    """Issue 13 #1: an issuer that does not answer is an outage (exit 4), not a wrong oauth_url (2)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = [
        "login",
        "--conn-id",
        "iceprod_unreach",
        "--oauth-url",
        f"http://127.0.0.1:{port}/realm",
        "--no-qr",
    ]
    proc = cli(args, capsys)
    assert proc.returncode == 4, proc.stderr
    assert "oauth_url" in proc.stderr and "try again later" in proc.stderr and "Traceback" not in proc.stderr
    assert db_connection("iceprod_unreach") is None


def test_login_without_a_usable_metadata_db_fails_before_the_device_flow(
    ip: LocalIceProd, env: dict[str, str], tmp_path: Path
) -> None:
    broken = {**env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path / 'not-migrated.db'}"}
    proc = run(login_args(ip, "iceprod_nodb", "--no-qr"), broken)
    assert proc.returncode == 2, proc.stderr
    assert "metadata DB" in proc.stderr and "--airflow-url" in proc.stderr and "--print" in proc.stderr
    assert ip.counters.matching("auth/device") == 0  # no login was started


def test_login_rejects_a_bad_url_before_any_request(env: dict[str, str], capsys) -> None:
    proc = cli(["login", "--conn-id", "iceprod_bad", "--api-url", "ftp://api.example.org", "--no-qr"], capsys)
    assert proc.returncode == 2
    assert "'host'" in proc.stderr


def test_status_refresh_logout(ip: LocalIceProd, env: dict[str, str], capsys) -> None:
    conn_id = "iceprod_cli_cycle"
    base = put_db_connection(ip, conn_id, "bob")

    status = cli(["status", "--conn-id", conn_id], capsys)
    assert status.returncode == 0, status.stderr
    assert "Logged in as:  bob" in status.stdout
    assert "/institutions/IceCube/UW-Madison" in status.stdout
    assert "valid until" in status.stdout
    assert base not in status.stdout

    # single-use: status refreshed once (it is not read-only) and saved the rotated token in the
    # overlay; the connection keeps the login
    def overlay_token() -> str:
        return json.loads(db_variable(f"iceprod_token_state__{conn_id}"))["refresh_token"]

    stored = overlay_token()
    assert stored != base and ip.refresh_token_is_valid(stored)
    assert db_connection(conn_id)["extra"]["refresh_token"] == base

    refresh = cli(["refresh", "--conn-id", conn_id], capsys)
    assert refresh.returncode == 0, refresh.stderr
    assert "Refreshed: bob" in refresh.stdout and "rotated" in refresh.stdout
    newest = overlay_token()
    assert newest != stored and ip.refresh_token_is_valid(newest)
    for secret in (base, stored, newest):
        assert secret not in status.stdout + status.stderr + refresh.stdout + refresh.stderr

    as_json = json.loads(cli(["status", "--conn-id", conn_id, "--json"], capsys).stdout)
    assert as_json["username"] == "bob" and as_json["credential"] == "refresh_token"

    latest = overlay_token()
    logout = cli(["logout", "--conn-id", conn_id], capsys)
    assert logout.returncode == 0, logout.stderr
    assert not ip.refresh_token_is_valid(latest)  # revoked at the issuer
    assert "refresh_token" not in db_connection(conn_id)["extra"]
    assert db_variable(f"iceprod_token_state__{conn_id}") is None

    after = cli(["status", "--conn-id", conn_id], capsys)
    assert after.returncode == 3
    assert f"airflow-iceprod login --conn-id {conn_id}" in after.stderr


def test_refresh_of_a_revoked_login_fails_clearly(ip: LocalIceProd, env: dict[str, str], capsys) -> None:
    token = put_db_connection(ip, "iceprod_revoked")
    ip.revoke_refresh_token(token)
    started = time.monotonic()
    proc = cli(["refresh", "--conn-id", "iceprod_revoked"], capsys)
    assert time.monotonic() - started < 15
    assert proc.returncode == 3
    assert "invalid_grant" in proc.stderr and "airflow-iceprod login --conn-id iceprod_revoked" in proc.stderr
    assert ip.counters.grants["device_code"] == 0


def test_status_of_a_missing_connection(env: dict[str, str], capsys) -> None:
    proc = cli(["status", "--conn-id", "iceprod_nowhere"], capsys)
    assert proc.returncode == 2
    assert "airflow-iceprod login --conn-id iceprod_nowhere" in proc.stderr


def test_token_endpoint_down_is_retried_then_exit_4(ip: LocalIceProd, env: dict[str, str], capsys) -> None:
    put_db_connection(ip, "iceprod_down")
    ip.faults.add(r"/protocol/openid-connect/token", status=503)  # overloaded: nothing was processed
    proc = cli(["refresh", "--conn-id", "iceprod_down"], capsys)
    assert proc.returncode == 4, proc.stderr
    assert "kept failing" in proc.stderr
    assert ip.counters.matching("openid-connect/token") == 4  # 1 + 3 retries, then a clear error


def test_a_lost_refresh_answer_is_not_re_sent_exit_4(ip: LocalIceProd, env: dict[str, str], capsys) -> None:
    put_db_connection(ip, "iceprod_lost")
    ip.faults.add(r"/protocol/openid-connect/token", status=502)  # the grant may have been processed
    proc = cli(["refresh", "--conn-id", "iceprod_lost"], capsys)
    assert proc.returncode == 4, proc.stderr
    assert "was lost" in proc.stderr and "not re-sent" in proc.stderr
    assert ip.counters.matching("openid-connect/token") == 1


def test_local_server_is_delegated(capsys) -> None:
    from airflow_provider_iceprod.cli import main

    with pytest.raises(SystemExit) as info:
        main(["local-server", "--help"])
    assert info.value.code == 0
    assert "--auto-approve-as" in capsys.readouterr().out


def test_no_command_prints_help(capsys) -> None:
    from airflow_provider_iceprod.cli import main

    assert main([]) == 2
    out = capsys.readouterr().out
    assert out.startswith("usage: airflow-iceprod")
    for command in ("login", "status", "refresh", "logout", "local-server"):
        assert command in out


def test_login_deletes_an_older_overlay_that_would_shadow_it(
    ip: LocalIceProd, env: dict[str, str], capsys
) -> None:
    """A new login writes the connection and deletes the token-state overlay: an overlay left from the
    previous login (here bob's, even stamped newer) must not win over the token just obtained."""
    from airflow.models import Variable
    from airflow.utils.session import create_session

    conn_id = "iceprod_relogin"
    put_db_connection(ip, conn_id, "bob")
    key = f"iceprod_token_state__{conn_id}"
    stale = {
        "refresh_token": ip.issue_refresh_token("bob"),
        "saved_at": time.time() + 3600,
        "issuer": ip.issuer_url,
        "client_id": "iceprod-public",
        "fingerprint_of_base": "",
    }
    with create_session() as session:
        session.add(Variable(key=key, val=json.dumps(stale)))
    assert "Logged in as:  bob" in cli(["status", "--conn-id", conn_id], capsys).stdout  # it shadows

    login = cli(login_args(ip, conn_id, "--no-qr"), capsys)  # the device flow approves alice
    assert login.returncode == 0, login.stderr
    assert db_variable(key) is None
    status = cli(["status", "--conn-id", conn_id], capsys)
    assert status.returncode == 0, status.stderr
    assert "Logged in as:  alice" in status.stdout


def _race_worker(conn_id: str, env_conn: str | None, lock_dir: str, barrier: Any, results: Any) -> None:
    """One of N forked processes: wait for the others, then force a refresh like `airflow-iceprod refresh`."""
    import contextlib
    import io

    from airflow import settings

    settings.engine.dispose(close=False)  # never share the parent's SQLite connections
    os.environ["AIRFLOW_ICEPROD_LOCK_DIR"] = lock_dir
    if env_conn:
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = env_conn
    from airflow_provider_iceprod.cli import main

    out, err = io.StringIO(), io.StringIO()
    barrier.wait(60)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["refresh", "--conn-id", conn_id])
    results.put((code, out.getvalue() + err.getvalue()))


@pytest.mark.parametrize(
    ("where", "locking"),
    [("db_connection", "host_lock"), ("env_connection", "no_lock")],
    ids=["db-connection-host-lock", "env-connection-no-lock"],
)
def test_eight_processes_refresh_single_use_tokens_concurrently(
    ip: LocalIceProd, env: dict[str, str], tmp_path: Path, where: str, locking: str
) -> None:
    """8 processes, one single-use refresh token, all refreshing at once: all succeed.

    ``host_lock``: processes on one host serialise on the file lock (the connection is in the DB, so
    the CLI also rewrites it). ``no_lock`` (as on separate hosts; the connection comes from the
    environment, so only the overlay Variable is shared): the losers get invalid_grant, re-read the
    overlay and retry with the rotated token.
    """
    import multiprocessing

    conn_id = f"iceprod_race_{where}_{locking}"
    put_db_connection(ip, conn_id)  # also clears an old overlay
    env_conn = ip.airflow_connection_json(conn_id) if where == "env_connection" else None
    lock_dir = str(tmp_path / "locks") if locking == "host_lock" else "off"
    ip.faults.add(r"/protocol/openid-connect/token", latency=0.05)  # widen the race window
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(8), ctx.Queue()
    procs = [
        ctx.Process(target=_race_worker, args=(conn_id, env_conn, lock_dir, barrier, results))
        for _ in range(8)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(30)
    failures = [out[-1500:] for code, out in outcomes if code != 0]
    assert not failures, failures
    assert ip.counters.grants["refresh_token"] == 8
    overlay = json.loads(db_variable(f"iceprod_token_state__{conn_id}"))
    assert ip.refresh_token_is_valid(overlay["refresh_token"])
    if locking == "host_lock":
        assert ip.counters.grant_requests["refresh_token"] == 8  # serialised: not one invalid_grant
