"""Rotating, single-use refresh tokens shared by many processes on one host, as users run them.

Eight fresh plain-Python processes read the connection from the metadata DB
(``_AIRFLOW_PROCESS_CONTEXT=server``) and each call ``IceProdHook().test_connection()`` three times,
with access tokens that expire between the calls, so every call needs a new access token: a refresh
grant, or the fresh access token another process stored in the overlay. The issuer spends each
refresh token on use. Every process must succeed every time, and a ninth process started
afterwards must authenticate: the newest refresh token was never lost.

Timings are scaled down (2 s tokens, 2.5 s apart; the issue's case is 8 s tokens, 9 s apart) through
``ICEPROD_ROTATION_*`` environment variables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_iceprod.testing import LocalIceProd

PROCESSES = int(os.environ.get("ICEPROD_ROTATION_PROCESSES", "8"))
TOKEN_LIFETIME = float(os.environ.get("ICEPROD_ROTATION_TOKEN_SECONDS", "2"))
GAP = float(os.environ.get("ICEPROD_ROTATION_GAP_SECONDS", str(TOKEN_LIFETIME + 0.5)))
CALLS = 3

pytestmark = pytest.mark.timeout(300)

WORKER = """
import sys, time
from airflow_provider_iceprod.hooks.iceprod import IceProdHook
conn_id, calls, gap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
ok = 0
for i in range(calls):
    if i:
        time.sleep(gap)
    good, message = IceProdHook(conn_id).test_connection()
    print("call", i, good, message, flush=True)
    ok += bool(good)
print("RESULT", ok, flush=True)
"""


def _put_connection(conn_id: str, extra: dict) -> None:
    from airflow.models import Connection, Variable
    from airflow.utils.session import create_session
    from sqlalchemy import delete

    with create_session() as session:
        session.execute(delete(Connection).where(Connection.conn_id == conn_id))
        session.execute(delete(Variable).where(Variable.key == f"iceprod_token_state__{conn_id}"))
    with create_session() as session:
        session.add(
            Connection(conn_id=conn_id, conn_type="iceprod", host=extra.pop("host"), extra=json.dumps(extra))
        )


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env["_AIRFLOW_PROCESS_CONTEXT"] = "server"  # read connections (and write the overlay) via the DB
    env["AIRFLOW_ICEPROD_LOCK_DIR"] = str(tmp_path / "locks")
    env["AIRFLOW_ICEPROD_STATE_DIR"] = str(tmp_path / "state")
    return env


def _start(conn_id: str, calls: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, conn_id, str(calls), str(GAP)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = proc.communicate(timeout=240)
    lines = [line for line in out.splitlines() if line.startswith("RESULT")]
    ok = int(lines[-1].split()[1]) if lines else -1
    return ok, out + err[-2000:]


def test_eight_processes_with_single_use_refresh_tokens_all_succeed_and_a_ninth_follows(
    airflow_db: Path, tmp_path: Path
) -> None:
    conn_id = "iceprod_rotation_8"
    with LocalIceProd(
        rotate_refresh_tokens=True, token_lifetime=TOKEN_LIFETIME, materialize_interval=None
    ) as ip:
        token = ip.issue_refresh_token("alice")
        _put_connection(conn_id, {"host": ip.api_url, **ip.connection_extra(token)})
        env = _env(tmp_path)
        procs = [_start(conn_id, CALLS, env) for _ in range(PROCESSES)]
        results = [_result(p) for p in procs]
        failed = [text for ok, text in results if ok != CALLS]
        assert not failed, f"{len(failed)} of {PROCESSES} processes failed a call:\n" + failed[0]

        ninth_ok, text = _result(_start(conn_id, 1, env))
        assert ninth_ok == 1, text
        # every refresh used the newest token: no invalid_grant was ever answered
        grants = ip.counters.grants["refresh_token"]
        assert ip.counters.grant_requests["refresh_token"] == grants
        # tokens expire between rounds, so each round refreshes at least once; processes that find a
        # fresh access token in the overlay take it over instead of rotating again
        assert CALLS <= grants <= PROCESSES * CALLS + 1
        for secret in (token,):
            assert all(secret not in t for _, t in results)


def test_an_overlay_saved_as_masked_in_the_ui_is_recovered(airflow_db: Path, tmp_path: Path) -> None:
    """Someone opens the overlay Variable in Airflow's UI and presses Save: it becomes ``***``."""
    from airflow.models import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    conn_id = "iceprod_ui_saved"
    key = f"iceprod_token_state__{conn_id}"
    with LocalIceProd(
        rotate_refresh_tokens=True, token_lifetime=TOKEN_LIFETIME, materialize_interval=None
    ) as ip:
        _put_connection(conn_id, {"host": ip.api_url, **ip.connection_extra(ip.issue_refresh_token("alice"))})
        env = _env(tmp_path)
        ok, text = _result(_start(conn_id, 1, env))
        assert ok == 1, text
        # what the UI writes back: the JSON with every value masked (Airflow redacts the whole
        # value of a Variable whose name contains "token")
        with create_session() as session:
            row = session.scalar(select(Variable).where(Variable.key == key))
            masked = {name: "***" for name in json.loads(row.val)}
            row.val = json.dumps(masked)
        ok, text = _result(_start(conn_id, 2, env))
        assert ok == 2, text
        assert "not a token" in text or "not valid JSON" in text  # the warning names what happened
        with create_session() as session:
            repaired = json.loads(session.scalar(select(Variable).where(Variable.key == key)).val)
        assert ip.refresh_token_is_valid(repaired["refresh_token"])
