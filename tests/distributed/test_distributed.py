"""The provider on a distributed Airflow: Postgres, Redis + Celery (2 workers), 2 triggerers.

Scenarios (figures go to ``docs/scale.md`` with ``make test-distributed``):

1. triggerer failover: many deferred waits, one triggerer SIGKILLed, the other takes them over;
2. a Celery worker SIGKILLed mid-submit at three moments; the retry reattaches, one dataset per run;
3. single-use refresh tokens rotated by 2 workers and 2 triggerers that share no file lock.

The tests never assert wall-clock speed; times are reported, bounds are generous counts.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from typing import Any

import pytest
from distributed_cluster import POLL_INTERVAL, REFRESH_PERIOD, TOKEN_LIFETIME, DistributedAirflow, Service

from airflow_provider_iceprod.version_compat import AIRFLOW_V_3_3_PLUS

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(3600)]

IDP = "/auth/realms/"


def _iceprod_requests(ip: Any) -> int:
    """IceProd API requests so far (identity-provider endpoints excluded)."""
    snap = ip.counters.snapshot()["routes"]
    return sum(n for route, n in snap.items() if IDP not in route)


def _datasets_per_run(ip: Any, run_ids: list[str]) -> Counter[str]:
    per_run: Counter[str] = Counter()
    for ds in ip.datasets():
        for run_id in run_ids:
            if ds["description"].split(" [airflow:")[0].endswith(f" {run_id}"):
                per_run[run_id] += 1
    return per_run


def _triggerers(cluster: DistributedAirflow) -> dict[int, Service]:
    """Running triggerer jobs (job id) -> the service whose process is that job."""
    out = {}
    for job_id, hostname in cluster.query(
        "SELECT DISTINCT ON (hostname) id, hostname FROM job WHERE job_type = 'TriggererJob' "
        "AND state = 'running' ORDER BY hostname, id DESC"
    ):
        svc = cluster.services.get(hostname)
        if svc is not None and svc.alive():
            out[int(job_id)] = svc
    return out


def _triggers_by_job(cluster: DistributedAirflow) -> dict[int | None, int]:
    rows = cluster.query("SELECT triggerer_id, count(*) FROM trigger GROUP BY 1")
    return {(None if job is None else int(job)): n for job, n in rows}


def _wait_all_deferred(cluster: DistributedAirflow, dag_id: str, count: int, timeout: float) -> None:
    def deferred_and_assigned() -> bool:
        states = cluster.ti_states(dag_id)
        triggers = _triggers_by_job(cluster)
        return (
            states.get("deferred", 0) >= count
            and triggers.get(None, 0) == 0
            and sum(triggers.values()) >= count
        )

    cluster.wait_for(f"{count} deferred {dag_id} tasks held by triggerers", deferred_and_assigned, timeout, 2)


def _wait_runs(
    cluster: DistributedAirflow, dag_id: str, count: int, timeout: float, prefix: str = ""
) -> dict[str, int]:
    def finished() -> dict[str, int] | None:
        states = cluster.run_states(dag_id, prefix)
        return states if states.get("success", 0) + states.get("failed", 0) >= count else None

    return cluster.wait_for(f"{count} finished {dag_id} runs", finished, timeout, 2)


def _failed_tries(cluster: DistributedAirflow, dag_id: str, prefix: str) -> str:
    """How many task tries failed (their retry then ran), by exception type, from the task logs."""
    reasons: Counter[str] = Counter()
    base = cluster.base / "task-logs" / f"dag_id={dag_id}"
    for path in base.glob(f"run_id={prefix}*/task_id=*/attempt=*.log"):
        text = path.read_text(errors="replace")
        if '"Task failed with exception"' in text:
            found = re.search(r'"exc_type":"([^"]+)","exc_value":"([^"]{0,60})', text)
            reasons[f"{found.group(1)}: {found.group(2)}..." if found else "unknown"] += 1
    if not reasons:
        return "0"
    return f"{sum(reasons.values())} (" + "; ".join(f"{n}x {r}" for r, n in reasons.most_common()) + ")"


def _rate(ip: Any, seconds: float) -> tuple[float, dict[str, int]]:
    """IceProd requests per poll interval over ``seconds``, and the routes they went to."""
    before = ip.counters.snapshot()["routes"]
    time.sleep(seconds)
    after = ip.counters.snapshot()["routes"]
    delta = {r: after.get(r, 0) - before.get(r, 0) for r in after if IDP not in r}
    delta = {r: n for r, n in delta.items() if n}
    return sum(delta.values()) / (seconds / POLL_INTERVAL), delta


# ---------------------------------------------------------------------------------------------------------------
# 1. triggerer failover


def test_triggerer_failover(
    cluster: DistributedAirflow, iceprod: Any, sizes: dict[str, int], results: Any
) -> None:
    runs = sizes["failover_runs"]
    threshold = float(cluster.env["AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD"])
    iceprod.grid.pause()  # no dataset finishes until the failover is over
    grants_before = sum(iceprod.counters.grants.values())
    t0 = time.monotonic()
    run_ids = [f"failover-{i:04d}" for i in range(runs)]
    for run_id in run_ids:
        cluster.api.trigger("dist_submit_wait", run_id)
    _wait_all_deferred(cluster, "dist_submit_wait", runs, timeout=180 + 8 * runs)
    deferred_after = time.monotonic() - t0

    owners = _triggerers(cluster)
    held = _triggers_by_job(cluster)
    assert len(owners) == 2, f"expected two live triggerers, got {owners}"
    rate_before, routes_before = _rate(iceprod, 4 * POLL_INTERVAL)

    victim_job = max(owners, key=lambda job: held.get(job, 0))
    victim = owners[victim_job]
    survivor_job = next(job for job in owners if job != victim_job)
    victim_held = held.get(victim_job, 0)
    heartbeat_age = cluster.query(
        "SELECT extract(epoch FROM now() - latest_heartbeat) FROM job WHERE id = %s", victim_job
    )[0][0]
    killed_at = time.monotonic()
    victim.kill()

    def taken_over() -> bool:
        now = _triggers_by_job(cluster)
        return now.get(victim_job, 0) == 0 and now.get(None, 0) == 0 and now.get(survivor_job, 0) >= runs

    cluster.wait_for(
        "the surviving triggerer to take over", taken_over, timeout=threshold + 120, interval=0.5
    )
    takeover = time.monotonic() - killed_at
    time.sleep(POLL_INTERVAL)  # the survivor's poller picks up its new subscribers
    rate_after, routes_after = _rate(iceprod, 4 * POLL_INTERVAL)
    assert cluster.ti_states("dist_submit_wait").get("deferred", 0) == runs

    iceprod.grid.resume()
    states = _wait_runs(cluster, "dist_submit_wait", runs, timeout=300 + 8 * runs, prefix="failover-")
    finished = time.monotonic() - t0
    grants = sum(iceprod.counters.grants.values()) - grants_before
    victim.start()  # back to two triggerers for the next scenarios

    assert states == {"success": runs}, cluster.tail()
    per_run = _datasets_per_run(iceprod, run_ids)
    assert all(per_run[r] == 1 for r in run_ids), {r: per_run[r] for r in run_ids if per_run[r] != 1}
    # Airflow reassigns a dead triggerer's triggers once its heartbeat is older than the threshold.
    assert takeover < threshold + 60, takeover
    # Steady state costs about 1 + count_budget requests per poller and interval, whatever the number of waits.
    assert rate_after <= rate_before + 2, (routes_before, routes_after)
    # Every Celery task process and triggerer needs an access token; no refresh per request or per wait.
    assert grants <= 2 * runs + 40, grants

    results.add("Triggerer failover", "DAG runs (each submits a dataset and waits deferrably)", runs)
    results.add("Triggerer failover", "triggers held by the killed triggerer", f"{victim_held} of {runs}")
    results.add("Triggerer failover", "health-check threshold / heartbeat", f"{threshold:g} s / 3 s")
    results.add(
        "Triggerer failover", "take-over time (SIGKILL to all triggers reassigned)", f"{takeover:.1f} s"
    )
    results.add(
        "Triggerer failover",
        "age of the killed triggerer's last heartbeat at the kill",
        f"{float(heartbeat_age):.1f} s",
    )
    results.add(
        "Triggerer failover",
        f"IceProd requests per poll interval ({POLL_INTERVAL:g} s), 2 triggerers",
        f"{rate_before:.1f}",
    )
    results.add(
        "Triggerer failover", "IceProd requests per poll interval after take-over", f"{rate_after:.1f}"
    )
    results.add("Triggerer failover", "token grants (whole scenario)", grants)
    results.add(
        "Triggerer failover",
        "time to all deferred / all runs successful",
        f"{deferred_after:.0f} s / {finished:.0f} s",
    )
    results.add("Triggerer failover", "datasets per run", "exactly 1 for every run")
    results.add(
        "Triggerer failover",
        "tries that failed and were retried",
        _failed_tries(cluster, "dist_submit_wait", "failover-"),
    )


# ---------------------------------------------------------------------------------------------------------------
# 2. Celery worker killed mid-submit

HOLD = 120.0  # seconds the stand-in holds an answer: far longer than the kill takes

MOMENTS = {
    # after IceProd accepted the submit, before its answer (the request id) reached the task
    "before the request id was stored": {
        "fault": r"POST /actions/submit$",
        "when": "after",
        "seen": "POST /actions/submit",
    },
    # the task stored the request id (task state store on 3.3+) and polls the request
    "after the request id was stored": {
        "fault": r"GET /actions/submit/",
        "when": "before",
        "seen": "GET /actions/submit/{request_id}",
    },
    # the task stored the dataset id and asks for materialization
    "after the dataset id was stored": {
        "fault": r"POST /actions/materialization$",
        "when": "before",
        "seen": "POST /actions/materialization",
    },
}


def _route_hits(ip: Any, route: str) -> int:
    return int(ip.counters.snapshot()["routes"].get(route, 0))


def _worker_running(cluster: DistributedAirflow, dag_id: str, run_id: str) -> Service:
    rows = cluster.query(
        "SELECT id, hostname FROM task_instance WHERE dag_id = %s AND run_id = %s AND state = 'running'",
        dag_id,
        run_id,
    )
    assert rows, f"{run_id} is not running"
    ti_id, hostname = str(rows[0][0]), rows[0][1]
    svc = cluster.services[hostname]
    assert any(ti_id in line for line in svc.cmdlines()), f"{hostname} does not run task instance {ti_id}"
    return svc


def test_worker_killed_mid_submit(cluster: DistributedAirflow, iceprod: Any, results: Any) -> None:
    iceprod.grid.resume()
    run_ids: dict[str, str] = {}
    killed: dict[str, Service] = {}
    t0 = time.monotonic()
    for index, (moment, spec) in enumerate(MOMENTS.items()):
        seen = _route_hits(iceprod, spec["seen"])
        iceprod.faults.add(spec["fault"], latency=HOLD, times=1, when=spec["when"])
        run_id = f"kill-{index}"
        run_ids[moment] = run_id
        cluster.api.trigger("dist_submit_hold", run_id)
        cluster.wait_for(
            f"{run_id} to be held {moment}",
            lambda s=spec, n=seen: _route_hits(iceprod, s["seen"]) > n,
            180,
            0.5,
        )
        killed[moment] = _worker_running(cluster, "dist_submit_hold", run_id)
    held_all = time.monotonic() - t0
    datasets_before_kill = {m: _datasets_per_run(iceprod, [r])[r] for m, r in run_ids.items()}

    victims = {svc.name: svc for svc in killed.values()}
    for svc in victims.values():
        svc.kill()
    killed_at = time.monotonic()
    for svc in victims.values():
        svc.start()

    states = _wait_runs(cluster, "dist_submit_hold", len(run_ids), timeout=400)
    recovered = time.monotonic() - killed_at
    iceprod.faults.clear()
    assert states == {"success": len(run_ids)}, cluster.tail()
    per_run = _datasets_per_run(iceprod, list(run_ids.values()))
    tries = dict(
        cluster.query("SELECT run_id, try_number FROM task_instance WHERE dag_id = 'dist_submit_hold'")
    )
    for moment, run_id in run_ids.items():
        assert per_run[run_id] == 1, (moment, per_run)
        assert tries[run_id] >= 2, (moment, tries)  # the first try really died
    logs = cluster.all_logs()
    assert "reattach" in logs.lower()

    results.add(
        "Worker killed mid-submit", "workers SIGKILLed (whole process tree)", ", ".join(sorted(victims))
    )
    for moment, run_id in run_ids.items():
        results.add(
            "Worker killed mid-submit",
            f"{moment}: datasets at the kill / after the retry / tries",
            f"{datasets_before_kill[moment]} / {per_run[run_id]} / {tries[run_id]}",
        )
    results.add(
        "Worker killed mid-submit",
        "task heartbeat timeout; kill to all runs successful",
        f"{cluster.env['AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT']} s; {recovered:.0f} s",
    )
    results.add("Worker killed mid-submit", "time to hold all three submits", f"{held_all:.0f} s")
    results.add(
        "Worker killed mid-submit",
        "how the retry found its dataset",
        "task state store (request id, dataset id)"
        if AIRFLOW_V_3_3_PLUS
        else "description marker (Airflow 3.2 has no task state store)",
    )


# ---------------------------------------------------------------------------------------------------------------
# 3. rotation across 2 workers + 2 triggerers


def test_rotation_across_workers_and_triggerers(
    cluster: DistributedAirflow, iceprod: Any, sizes: dict[str, int], results: Any
) -> None:
    seconds = sizes["rotation_seconds"]
    waits = sizes["rotation_waits"]
    lost_before = cluster.all_logs().count("IceProdAuthError")
    # Four hosts as far as tokens go: no file lock shared, only the token-state Variable in Postgres.
    cluster.use_separate_locks(True)
    dataset_id = iceprod.create_dataset(jobs_submitted=1)
    iceprod.grid.pause()
    wait_runs = [f"rotation-wait-{i:03d}" for i in range(waits)]
    for run_id in wait_runs:
        cluster.api.trigger("dist_submit_wait", run_id)
    _wait_all_deferred(cluster, "dist_submit_wait", waits, timeout=300 + 20 * waits)
    owners = _triggerers(cluster)
    held = _triggers_by_job(cluster)
    triggerers_used = sum(1 for job in owners if held.get(job, 0) > 0)

    snap0 = iceprod.counters.snapshot()
    t0 = time.monotonic()
    cluster.api.trigger(
        "dist_token_load", "rotation-load", {"seconds": seconds, "interval": 1, "dataset_id": dataset_id}
    )
    load_state = _wait_runs(cluster, "dist_token_load", 1, timeout=seconds + 300, prefix="rotation-load")
    elapsed = time.monotonic() - t0
    snap1 = iceprod.counters.snapshot()
    iceprod.grid.resume()
    waits_state = _wait_runs(
        cluster, "dist_submit_wait", waits, timeout=300 + 20 * waits, prefix="rotation-wait-"
    )

    # After all that rotation, a fresh task process still logs in with the stored (rotated) token.
    cluster.api.trigger(
        "dist_token_load", "rotation-after", {"seconds": 1, "interval": 1, "dataset_id": dataset_id}
    )
    after_state = _wait_runs(cluster, "dist_token_load", 1, timeout=300, prefix="rotation-after")

    grants = snap1["grants"].get("refresh_token", 0) - snap0["grants"].get("refresh_token", 0)
    grant_requests = snap1["grant_requests"].get("refresh_token", 0) - snap0["grant_requests"].get(
        "refresh_token", 0
    )
    rejected = grant_requests - grants
    logs = cluster.all_logs()
    lost = logs.count("IceProdAuthError") - lost_before

    assert load_state == {"success": 1}, cluster.tail()
    assert waits_state == {"success": waits}, waits_state
    assert after_state == {"success": 1}, cluster.tail()
    assert lost == 0, "a process lost the IceProd login"
    periods = elapsed / REFRESH_PERIOD
    assert periods >= 10, periods
    # 4 token-holding processes (2 load tasks, 2 triggerers) need a new token each period; one that
    # finds a fresh one in the token-state Variable takes it over, so it is between 1 and 4 grants per
    # period (the lower bound proves the tokens really were renewed all along).
    assert periods / 2 <= grants <= 4 * (periods + 2) * 1.5, (grants, periods)

    results.add(
        "Token rotation",
        "processes sharing the login (own lock dir each)",
        "2 Celery task processes, 2 triggerers",
    )
    results.add("Token rotation", "triggerers holding waits", f"{triggerers_used} of 2 ({waits} waits)")
    results.add(
        "Token rotation",
        "access-token lifetime / renewed every",
        f"{TOKEN_LIFETIME} s / ~{REFRESH_PERIOD:g} s (renewed a quarter of the lifetime before expiry)",
    )
    results.add("Token rotation", "duration", f"{elapsed:.0f} s = {periods:.0f} renewal periods")
    results.add("Token rotation", "refresh grants issued", grants)
    results.add("Token rotation", "refresh requests rejected (invalid_grant races)", rejected)
    results.add("Token rotation", "grants per process and period", f"{grants / 4 / periods:.2f}")
    results.add("Token rotation", "lost logins (IceProdAuthError)", lost)
    results.add(
        "Token rotation", "task tries that failed", _failed_tries(cluster, "dist_token_load", "rotation-")
    )
