"""A distributed Airflow on loopback, started and stopped by the tests.

PostgreSQL (a throwaway cluster made with ``initdb`` in a temp dir) is the metadata DB, Redis the
Celery broker, and Airflow runs as separate processes: api-server, scheduler, dag-processor, two
triggerers and two Celery workers. Each worker and triggerer gets its own token lock directory
(``AIRFLOW_ICEPROD_LOCK_DIR``), so they share no file lock: as far as token refreshes go they are four
hosts, coordinating only through the metadata DB (the token-state Variable).

Debian's ``postgresql`` and ``redis-server`` must be installed (``make distributed-deps``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from airflow_processes import BIN, free_port, wait_healthy

from airflow_provider_iceprod.auth.tokens import DEFAULT_LEAD_TIME, MAX_LEAD_FRACTION

HERE = Path(__file__).resolve().parent
DAGS = HERE / "dags"

SCALE = os.environ.get("ICEPROD_DISTRIBUTED", "").strip().lower()

#: Sizes per scale: runs waiting through the triggerer failover, seconds of token rotation.
SIZES: dict[str, dict[str, int]] = {
    "ci": {"failover_runs": 20, "rotation_seconds": 65, "rotation_waits": 6},
    "full": {"failover_runs": 200, "rotation_seconds": 240, "rotation_waits": 20},
}

#: Access tokens live 8 s; the provider renews them a quarter of their lifetime (2 s) before they
#: expire (auth/tokens.py: the 120 s lead is capped at MAX_LEAD_FRACTION of the lifetime), so every
#: process needs a new one every ~6 s: one "renewal period" as far as rotation is concerned.
TOKEN_LIFETIME = 8
REFRESH_PERIOD = TOKEN_LIFETIME - min(DEFAULT_LEAD_TIME, MAX_LEAD_FRACTION * TOKEN_LIFETIME)
POLL_INTERVAL = 3.0


def postgres_bin() -> Path:
    """The directory of ``initdb``/``pg_ctl`` (Debian keeps them out of PATH)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if not candidates:
        raise RuntimeError("PostgreSQL is not installed: run `make distributed-deps`")
    return candidates[-1].parent


def redis_server() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if not found:
        raise RuntimeError("redis-server is not installed: run `make distributed-deps`")
    return found


def _db_user() -> str | None:
    """PostgreSQL refuses to run as root: then run it as ``postgres`` (or ``nobody``)."""
    if os.geteuid() != 0:
        return None
    import pwd

    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root and there is no 'postgres' or 'nobody' user for PostgreSQL")


class Postgres:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "pgdata"
        self.port = free_port()
        self.user = _db_user()
        self.bin = postgres_bin()

    def _cmd(self, *args: str) -> list[str]:
        if self.user is None:
            return list(args)
        return ["runuser", "-u", self.user, "--", *args]

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            import pwd

            pw = pwd.getpwnam(self.user)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            os.chmod(self.base, 0o700)
        subprocess.run(
            self._cmd(
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "airflow",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ),
            check=True,
            capture_output=True,
            cwd="/",
        )
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.data} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=400 -c shared_buffers=64MB"
        )
        subprocess.run(
            self._cmd(
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.data / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ),
            check=True,
            capture_output=True,
            cwd="/",
        )
        subprocess.run(
            self._cmd(
                str(self.bin / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "airflow",
                "-d",
                "postgres",
                "-c",
                "CREATE DATABASE airflow",
            ),
            check=True,
            capture_output=True,
            cwd="/",
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://airflow@127.0.0.1:{self.port}/airflow"

    def connect(self) -> Any:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="airflow", dbname="airflow")
        conn.autocommit = True
        return conn

    def stop(self) -> None:
        if not (self.data / "postmaster.pid").exists():
            shutil.rmtree(self.base, ignore_errors=True)
            return
        subprocess.run(
            self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"),
            capture_output=True,
            cwd="/",
            timeout=60,
        )
        shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    incarnations: int = 0

    def start(self) -> None:
        self.incarnations += 1
        log = self.log_path.open("ab")
        log.write(f"\n===== start #{self.incarnations}: {' '.join(self.argv)}\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.env["AIRFLOW_HOME"],
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pids(self) -> set[int]:
        """This service's process and every descendant (task supervisors, task processes, pool children)."""
        if self.proc is None:
            return set()
        try:
            root = psutil.Process(self.proc.pid)
            return {self.proc.pid, *(child.pid for child in root.children(recursive=True))}
        except psutil.NoSuchProcess:
            return set()

    def cmdlines(self) -> list[str]:
        out = []
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                out.append(" ".join(psutil.Process(pid).cmdline()))
        return out

    def kill(self) -> None:
        """SIGKILL the whole process tree at once, as if its host died."""
        if self.proc is None:
            return
        victims = []
        for pid in self.pids():
            with contextlib.suppress(psutil.Error):
                victims.append(psutil.Process(pid))
        for victim in victims:
            with contextlib.suppress(psutil.Error):
                victim.send_signal(signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        psutil.wait_procs(victims, timeout=10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
        # leftovers of the group (task processes) go too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


@dataclass
class DistributedAirflow:
    base: Path
    pg: Postgres
    env: dict[str, str]
    api_port: int
    redis: subprocess.Popen[bytes] | None = None
    services: dict[str, Service] = field(default_factory=dict)
    api: Any = None
    separate_locks: bool = False

    # ------------------------------------------------------------------ processes

    def service(self, name: str, argv: Sequence[str], *, host: bool = False) -> Service:
        env = dict(self.env)
        if host:  # a simulated host: its own hostname and token lock directory
            env["ICEPROD_DIST_HOSTNAME"] = name
            env["AIRFLOW_ICEPROD_LOCK_DIR"] = self.lock_dir(name if self.separate_locks else "shared")
        svc = Service(name, [str(BIN / "airflow"), *argv], env, self.base / "logs" / f"{name}.log")
        self.services[name] = svc
        svc.start()
        return svc

    def lock_dir(self, name: str) -> str:
        path = self.base / "locks" / name
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return str(path)

    def hosts(self) -> list[Service]:
        return [s for s in self.services.values() if "ICEPROD_DIST_HOSTNAME" in s.env]

    def use_separate_locks(self, separate: bool) -> None:
        """Restart workers and triggerers with one token lock dir each (hosts) or one shared (one host)."""
        self.separate_locks = separate
        for svc in self.hosts():
            svc.stop()
            svc.env["AIRFLOW_ICEPROD_LOCK_DIR"] = self.lock_dir(svc.name if separate else "shared")
            svc.start()

    def airflow(self, *argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "airflow"), *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def python(self, code: str, *args: str, timeout: float = 300) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", code, *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if proc.returncode != 0:
            raise RuntimeError(f"helper script failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return proc.stdout

    # ------------------------------------------------------------------ metadata DB queries

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = self.pg.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def ti_states(self, dag_id: str) -> dict[str, int]:
        rows = self.query(
            "SELECT coalesce(state, 'none'), count(*) FROM task_instance WHERE dag_id = %s GROUP BY 1", dag_id
        )
        return {state: count for state, count in rows}

    def run_states(self, dag_id: str, prefix: str = "") -> dict[str, int]:
        rows = self.query(
            "SELECT state, count(*) FROM dag_run WHERE dag_id = %s AND run_id LIKE %s GROUP BY 1",
            dag_id,
            prefix + "%",
        )
        return {state: count for state, count in rows}

    def wait_for(self, what: str, check: Any, timeout: float, interval: float = 1.0) -> Any:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = check()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(
            f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})\n{self.tail()}"
        )

    def wait_dag_parsed(self, dag_ids: Sequence[str], timeout: float = 180) -> None:
        def parsed() -> bool:
            rows = self.query("SELECT dag_id FROM serialized_dag")
            return set(dag_ids) <= {r[0] for r in rows}

        self.wait_for(f"DAGs {list(dag_ids)} to be parsed", parsed, timeout)

    def trigger(self, dag_id: str, count: int, prefix: str, conf: dict[str, Any] | None = None) -> list[str]:
        """Create ``count`` manual runs in one process (the ORM, like `airflow dags trigger`)."""
        import json

        code = (
            "import json, sys\n"
            "from airflow.api.common.trigger_dag import trigger_dag\n"
            "from airflow.utils.types import DagRunTriggeredByType\n"
            "dag_id, count, prefix, conf = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])\n"
            "for i in range(count):\n"
            "    run_id = f'{prefix}-{i:04d}'\n"
            "    trigger_dag(dag_id, run_id=run_id, conf=conf, triggered_by=DagRunTriggeredByType.TEST)\n"
            "    print(run_id)\n"
        )
        out = self.python(code, dag_id, str(count), prefix, json.dumps(conf or {}))
        return [line for line in out.splitlines() if line.startswith(prefix)]

    # ------------------------------------------------------------------ logs

    def tail(self, chars: int = 3000) -> str:
        parts = []
        for path in sorted((self.base / "logs").glob("*.log")):
            text = path.read_text(errors="replace")
            parts.append(f"--- {path.name}\n{text[-chars:]}")
        return "\n".join(parts)

    def all_logs(self) -> str:
        files = [
            *sorted((self.base / "logs").rglob("*.log")),
            *sorted((self.base / "task-logs").rglob("*.log")),
        ]
        return "\n".join(p.read_text(errors="replace") for p in files)

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        for svc in reversed(list(self.services.values())):
            with contextlib.suppress(Exception):
                svc.stop()
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.redis.wait(timeout=10)
        self.pg.stop()


@contextlib.contextmanager
def distributed_airflow(
    base: Path,
    *,
    worker_concurrency: int = 8,
    triggerer_capacity: int = 1000,
    triggerer_health_threshold: float = 30.0,
    heartbeat_timeout: float = 20.0,
    separate_locks: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Iterator[DistributedAirflow]:
    (base / "logs").mkdir(parents=True, exist_ok=True)
    home = base / "home"
    home.mkdir()
    # not under pytest's tmp dirs (mode 0700, owned by root): PostgreSQL may run as another user
    pg = Postgres(Path(tempfile.mkdtemp(prefix="iceprod-pg-")))
    api_port = free_port()
    redis_port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AIRFLOW_VAR_"))
    }
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__FERNET_KEY": os.environ.get(
                "AIRFLOW__CORE__FERNET_KEY", "SYoabuz0qzJ1B4EM7mBAnbUvcYpTbPMJr_qB8_7T2z8="
            ),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + pg.url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(worker_concurrency),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__PARALLELISM": "256",
            "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": "1000",
            "AIRFLOW__CORE__MAX_ACTIVE_RUNS_PER_DAG": "1000",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": "distributed-test-jwt-secret-0123456789abcdef",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(int(heartbeat_timeout)),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(int(triggerer_health_threshold)),
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "3",
            "AIRFLOW__TRIGGERER__CAPACITY": str(triggerer_capacity),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(base / "task-logs"),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "dist_hostname.hostname",
            "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            **(extra_env or {}),
        }
    )
    cluster = DistributedAirflow(base=base, pg=pg, env=env, api_port=api_port, separate_locks=separate_locks)
    try:
        pg.start()
        (base / "pg-port").write_text(str(pg.port))  # for looking at a running test with psql
        redis_log = (base / "logs" / "redis.log").open("wb")
        cluster.redis = subprocess.Popen(
            [
                redis_server(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(redis_port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(base),
            ],
            stdout=redis_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        migrate = cluster.airflow("db", "migrate", timeout=600)
        if migrate.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{migrate.stderr[-4000:]}")
        api = cluster.service("api-server", ["api-server", "-H", "127.0.0.1", "-p", str(api_port), "-w", "1"])
        cluster.service("scheduler", ["scheduler", "--skip-serve-logs"])
        cluster.service("dag-processor", ["dag-processor"])
        for name in ("triggerer-1", "triggerer-2"):
            cluster.service(name, ["triggerer", "--skip-serve-logs"], host=True)
        for index, name in enumerate(("worker-1", "worker-2"), start=1):
            cluster.service(
                name,
                [
                    "celery",
                    "worker",
                    "--skip-serve-logs",
                    "-H",
                    f"{name}@%h",
                    "-q",
                    f"default,w{index}",
                    "--without-mingle",
                    "--without-gossip",
                ],
                host=True,
            )
        wait_healthy(
            f"http://127.0.0.1:{api_port}/api/v2/monitor/health",
            api.alive,
            api.name,
            180,
            lambda: ":\n" + api.log_path.read_text()[-4000:],
        )
        yield cluster
    finally:
        cluster.stop()
