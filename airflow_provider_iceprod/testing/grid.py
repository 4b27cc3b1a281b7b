"""The simulated grid and IceProd's crons: materialization, queueing, job/dataset completion, cleanup.

Everything advances in wall-clock time. ``Grid.tick(now)`` runs on a timer in the server's IOLoop
(every ``grid_tick`` seconds); each call:

1. moves tasks like ``queue_tasks`` and HTCondor do: idle -> waiting once every dependency is complete,
   waiting -> queued -> processing (one ``step`` each), processing -> complete or failed after the
   task's duration (failures per task name, see :meth:`Grid.fail_task`);
2. runs ``job_completion``, ``dataset_completion`` and ``dataset_cleanup`` with IceProd's rules,
   including the real server's stall (a failed upstream task leaves its dependants idle forever).

``Grid.materialize`` creates jobs and tasks like IceProd's materialization service.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_iceprod.testing.states import (
    TASK_STATUS,
    new_id,
    nowstr,
)
from airflow_provider_iceprod.testing.store import Store


@dataclass
class FailureRule:
    """How tasks of one name end: fail with ``probability``, or only the first ``times`` of them."""

    probability: float = 1.0
    times: int | None = None

    def decide(self, rng: random.Random) -> bool:
        if self.times is not None:
            if self.times > 0:
                self.times -= 1
                return True
            return False
        return rng.random() < self.probability


class MaterializationError(Exception):
    """Materialization failed; ``str()`` is what IceProd's action would put in ``error_message``."""


class Grid:
    """Simulated HTCondor plus IceProd's status crons, acting on a :class:`Store`."""

    def __init__(
        self,
        store: Store,
        *,
        api_url: str,
        task_duration: float | Mapping[str, float] = 0.2,
        step: float = 0.05,
        fail_tasks: Mapping[str, float | Mapping[str, Any]] | None = None,
        materialize_batch: int = 100,
        missing_config_grace: float = 5.0,
        dataset_cleanup: bool = True,
        seed: int | None = None,
        iceprod_bugs: bool = True,
    ) -> None:
        self._store = store
        self.iceprod_bugs = iceprod_bugs
        self._api_url = api_url
        self.task_duration = task_duration
        self.step = step
        self.materialize_batch = materialize_batch
        self.missing_config_grace = missing_config_grace
        self.dataset_cleanup = dataset_cleanup
        self._rng = random.Random(seed)
        self._failures: dict[str, FailureRule] = {}
        self._paused = threading.Event()
        for name, spec in (fail_tasks or {}).items():
            if isinstance(spec, Mapping):
                self.fail_task(name, probability=float(spec.get("probability", 1.0)), times=spec.get("times"))
            else:
                self.fail_task(name, probability=float(spec))

    # ---------------------------------------------------------------- controls (any thread)

    def fail_task(self, name: str, *, probability: float = 1.0, times: int | None = None) -> None:
        """Tasks called ``name`` fail from now on: with ``probability``, or only the next ``times`` ones."""
        with self._store.lock:
            self._failures[name] = FailureRule(probability=probability, times=times)

    def clear_failures(self) -> None:
        with self._store.lock:
            self._failures.clear()

    def pause(self) -> None:
        """Freeze the grid and the crons (requests still work); :meth:`resume` continues."""
        self._paused.set()

    def resume(self) -> None:
        self._paused.clear()

    @property
    def paused(self) -> bool:
        return self._paused.is_set()

    # ---------------------------------------------------------------- the tick

    def tick(self, now: float) -> None:
        if self._paused.is_set():
            return
        store = self._store
        with store.lock:
            for running in list(store.running.values()):
                for task in list(running.values()):
                    self._advance_running(task, now)
            dirty, store.dirty = store.dirty, set()
            for dataset_id in dirty:
                self._release_idle(dataset_id, now)
                self._job_completion(dataset_id)
            for dataset_id, doc in store.datasets.items():
                if dataset_id in dirty or (doc["status"] == "processing" and dataset_id not in store.configs):
                    self._dataset_completion(dataset_id, now)
            if self.dataset_cleanup:
                for dataset_id in dirty:
                    self._cleanup(dataset_id, now)

    def _duration(self, name: str) -> float:
        if isinstance(self.task_duration, Mapping):
            return float(self.task_duration.get(name, self.task_duration.get("*", 0.2)))
        return float(self.task_duration)

    def _release_idle(self, dataset_id: str, now: float) -> None:
        """``queue_tasks``: idle -> waiting once every dependency is complete."""
        tasks = self._store.dataset_tasks(dataset_id)
        for task in tasks.values():
            if task["status"] == "idle" and all(
                (tasks.get(d) or self._store.find_task(d) or {}).get("status") == "complete"
                for d in task["depends"]
            ):
                self._store.set_task_status(task, "waiting", now)

    def _advance_running(self, task: dict[str, Any], now: float) -> None:
        """HTCondor: waiting -> queued -> processing -> complete or failed."""
        status, age = task["status"], now - task["_entered"]
        if status == "waiting" and age >= self.step:
            self._store.set_task_status(task, "queued", now)
        elif status == "queued" and age >= self.step:
            self._store.set_task_status(task, "processing", now)
            task["site"] = "localhost"
            task["instance_id"] = new_id()
        elif status == "processing" and age >= self._duration(task["name"]):
            self._finish(task, age, now)

    def _finish(self, task: dict[str, Any], seconds: float, now: float) -> None:
        rule = self._failures.get(task["name"])
        failed = rule.decide(self._rng) if rule else False
        hours = seconds / 3600.0
        dataset_id, task_id = task["dataset_id"], task["task_id"]
        self._store.add_log(
            dataset_id, task_id, "stdlog", f"running task {task['name']} on the simulated grid\n"
        )
        if failed:
            task["failures"] += 1
            task["walltime_err"] += hours
            task["walltime_err_n"] += 1
            self._store.add_log(dataset_id, task_id, "stdout", f"simulated output of {task['name']}\n")
            self._store.add_log(dataset_id, task_id, "stderr", f"simulated failure of task {task['name']}\n")
            self._store.set_task_status(task, "failed", now)
        else:
            task["walltime"] = hours
            self._store.add_log(dataset_id, task_id, "stdout", f"simulated output of {task['name']}\n")
            self._store.add_log(dataset_id, task_id, "stderr", "")
            self._store.set_task_status(task, "complete", now)
        self._store.task_stats.setdefault(task_id, []).append(
            {
                "task_stat_id": new_id(),
                "task_id": task_id,
                "dataset_id": dataset_id,
                "create_date": nowstr(),
                "stats": {
                    "hostname": "localhost",
                    "domain": "simulated",
                    "resources": {"cpu": task["requirements"].get("cpu", 1), "time": hours},
                    "time_used": seconds,
                    "error": failed,
                },
            }
        )
        task["instance_id"] = ""

    def _job_completion(self, dataset_id: str) -> None:
        """``job_completion`` for one dataset."""
        if self._store.datasets.get(dataset_id, {}).get("status") != "processing":
            return
        tasks_by_job: dict[str, set[str]] = {}
        for task in self._store.dataset_tasks(dataset_id).values():
            tasks_by_job.setdefault(task["job_id"], set()).add(task["status"])
        for job_id, job in self._store.dataset_jobs(dataset_id).items():
            if job["status"] != "processing":
                continue
            statuses = tasks_by_job.get(job_id, set())
            if statuses == {"complete"}:
                self._store.set_job_status(job, "complete")
            elif not statuses - {"complete", "suspended"}:
                self._store.set_job_status(job, "suspended")
            elif not statuses - {"complete", "failed", "suspended"}:
                self._store.set_job_status(job, "errors")

    def _dataset_completion(self, dataset_id: str, now: float) -> None:
        """``dataset_completion`` for one dataset."""
        doc = self._store.datasets.get(dataset_id)
        if doc is None or doc["status"] != "processing":
            return
        if dataset_id not in self._store.configs:
            created = self._store.dataset_created.get(dataset_id, now)
            if now - created >= self.missing_config_grace:
                doc["status"] = "suspended"
                self._store.touch(dataset_id)
            return
        if doc.get("always_active"):
            return
        counts = Counter(job["status"] for job in self._store.dataset_jobs(dataset_id).values())
        if not (doc.get("truncated") or sum(counts.values()) >= doc["jobs_submitted"]):
            return
        statuses = set(counts)
        if statuses == {"complete"}:
            doc["status"] = "complete"
        elif "processing" not in statuses:
            doc["status"] = "errors" if "errors" in statuses else "suspended"
        else:
            return
        self._store.touch(dataset_id)

    def _cleanup(self, dataset_id: str, now: float) -> None:
        """``dataset_cleanup`` for one dataset: stop leftovers of stopped datasets and jobs."""
        doc = self._store.datasets.get(dataset_id)
        if doc is None:
            return
        jobs = self._store.dataset_jobs(dataset_id)
        tasks = self._store.dataset_tasks(dataset_id).values()
        if doc["status"] in ("suspended", "errors"):
            for job in jobs.values():
                if job["status"] == "processing":
                    self._store.set_job_status(job, "suspended")
            for task in tasks:
                if task["status"] not in ("complete", "suspended", "failed"):
                    self._store.set_task_status(task, "suspended", now)
        elif doc["status"] == "processing":
            stopped = {jid for jid, job in jobs.items() if job["status"] in ("suspended", "errors")}
            for task in tasks:
                if task["job_id"] in stopped and task["status"] not in ("complete", "suspended"):
                    self._store.set_task_status(task, "suspended", now)

    # ---------------------------------------------------------------- materialization

    def materialize(
        self, dataset_id: str, now: float, *, num: int = 1000, set_status: str | None = None
    ) -> int:
        """Buffer up to ``num`` new jobs of one dataset (explicit request: truncation is ignored).

        Returns the number of jobs created. Raises :class:`MaterializationError` with IceProd's text.
        """
        if set_status and set_status not in TASK_STATUS:
            raise MaterializationError("set_status is not a valid task status")
        with self._store.lock:
            dataset = self._store.datasets.get(dataset_id)
            if dataset is None:
                raise MaterializationError(
                    self._client_error(404, "Dataset not found", f"/datasets/{dataset_id}")
                )
            return self._buffer(dataset, num, set_status, now)

    def cron_materialize(self, now: float) -> None:
        """One pass of IceProd's ``buffer_jobs_tasks`` cron over processing datasets."""
        if self._paused.is_set():
            return
        with self._store.lock:
            for dataset in list(self._store.datasets.values()):
                if dataset["status"] != "processing":
                    continue
                if dataset.get("truncated") and not self.iceprod_bugs:
                    continue  # what IceProd means to do; 3.2.43's cron asks per dataset, ignoring truncated
                if dataset["dataset_id"] not in self._store.configs:
                    continue
                jobs = self._store.dataset_jobs(dataset["dataset_id"]).values()
                processing = sum(1 for j in jobs if j["status"] == "processing")
                waiting = any(
                    t["status"] == "waiting"
                    for t in self._store.dataset_tasks(dataset["dataset_id"]).values()
                )
                # 3.2.43's cron names the dataset, which also skips this throttle
                if self.iceprod_bugs or not waiting or processing < self.materialize_batch:
                    try:
                        self._buffer(dataset, self.materialize_batch, None, now)
                    except MaterializationError:
                        continue  # the cron logs and goes on

    def _buffer(self, dataset: dict[str, Any], num: int, set_status: str | None, now: float) -> int:
        dataset_id = dataset["dataset_id"]
        config = self._store.configs.get(dataset_id)
        if config is None:
            raise MaterializationError(self._client_error(404, "Config not found", f"/config/{dataset_id}"))
        jobs = self._store.jobs.setdefault(dataset_id, {})
        next_index = max((j["job_index"] for j in jobs.values()), default=-1) + 1
        task_configs = config.get("tasks") or []
        names = [t.get("name") or str(i) for i, t in enumerate(task_configs)]
        # like IceProd: first finish a job whose tasks were not all created (a depends failed halfway)
        tasks = self._store.dataset_tasks(dataset_id)
        if len(tasks) < len(jobs) * dataset["tasks_per_job"]:
            per_job = Counter(t["job_id"] for t in tasks.values())
            for job_id, job in sorted(jobs.items(), key=lambda kv: -kv[1]["job_index"]):
                if per_job[job_id] < dataset["tasks_per_job"]:
                    self._buffer_job(
                        dataset_id, job["job_index"], task_configs, names, set_status, now, job_id=job_id
                    )
        to_create = min(num, dataset["jobs_submitted"] - next_index)
        if to_create <= 0:
            return 0
        for job_index in range(next_index, next_index + to_create):
            if len(names) != dataset["tasks_per_job"]:
                raise MaterializationError("config num tasks does not match dataset tasks_per_job")
            self._buffer_job(dataset_id, job_index, task_configs, names, set_status, now)
        return to_create

    def _buffer_job(
        self,
        dataset_id: str,
        job_index: int,
        task_configs: list[dict[str, Any]],
        names: list[str],
        set_status: str | None,
        now: float,
        *,
        job_id: str | None = None,
    ) -> None:
        """Create a job and its tasks one by one, as IceProd does: a bad ``depends`` stops it halfway."""
        index_of = {name: i for i, name in enumerate(names)}
        tasks = self._store.tasks.setdefault(dataset_id, {})
        task_ids: list[str] = []
        if job_id is None:
            job_id = new_id()
            self._store.jobs[dataset_id][job_id] = {
                "dataset_id": dataset_id,
                "job_index": job_index,
                "job_id": job_id,
                "status": "processing",
                "status_changed": nowstr(),
            }
            self._store.touch(dataset_id)
        else:
            existing = sorted(
                (t for t in tasks.values() if t["job_id"] == job_id), key=lambda t: t["task_index"]
            )
            task_ids = [t["task_id"] for t in existing]
        for task_index, (name, task_config) in enumerate(zip(names, task_configs, strict=True)):
            if task_index < len(task_ids):
                continue
            depends = self._depends(task_config, task_index, index_of, task_ids)
            task_id = new_id()
            task = {
                "dataset_id": dataset_id,
                "job_id": job_id,
                "task_index": task_index,
                "job_index": job_index,
                "name": name,
                "depends": depends,
                "requirements": _requirements(task_config),
                "task_id": task_id,
                "status_changed": "",
                "failures": 0,
                "evictions": 0,
                "walltime": 0.0,
                "walltime_err": 0.0,
                "walltime_err_n": 0,
                "site": "",
                "status": "idle",
                "priority": 1.0,
                "instance_id": "",
            }
            self._store.set_task_status(task, set_status or "idle", now)
            tasks[task_id] = task
            task_ids.append(task_id)

    def _depends(
        self,
        task_config: Mapping[str, Any],
        task_index: int,
        index_of: Mapping[str, int],
        task_ids: list[str],
    ) -> list[str]:
        """Task ids a new task waits for: names or indexes of this job's tasks, or raw task ids.

        ``"<dataset_id>:<task>"`` fails like in IceProd 3.2.43 (its materialization cannot resolve it)
        unless ``iceprod_bugs`` is off."""
        out = []
        for dep in task_config.get("depends") or []:
            if (isinstance(dep, str) and dep in index_of) or (isinstance(dep, int) and dep < len(index_of)):
                dep_index = index_of[dep] if isinstance(dep, str) else dep
                if dep_index >= task_index:
                    raise MaterializationError(
                        str(Exception("bad depends: %r. can't depend on ourself or a greater index", dep))
                    )
                out.append(task_ids[dep_index])
            elif isinstance(dep, str) and ":" in dep and not self.iceprod_bugs:
                other, name = dep.split(":", 1)
                found = [
                    t
                    for t in self._store.dataset_tasks(other).values()
                    if name in (t["name"], str(t["task_index"]))
                ]
                if not found:
                    raise MaterializationError(str(Exception("bad depends: %r", name)))
                out.append(found[0]["task_id"])
            elif isinstance(dep, str) and ":" in dep:
                raise MaterializationError(str(Exception("bad depends: %r", dep.split(":", 1)[1])))
            elif isinstance(dep, str) and self._store.find_task(dep) is not None:
                out.append(dep)  # a raw task id, of any dataset
            else:
                raise MaterializationError(str(Exception("bad depends: %r", dep)))
        return out

    def _client_error(self, code: int, reason: str, path: str) -> str:
        return http_error_text(code, reason, f"{self._api_url}{path}")


def _requirements(task_config: Mapping[str, Any]) -> dict[str, Any]:
    """A task's requirements as materialization stores them (a ``gpu`` list becomes its length)."""
    reqs = dict(task_config.get("requirements") or {})
    if isinstance(reqs.get("gpu"), list | tuple):
        reqs["gpu"] = len(reqs["gpu"])
    return reqs


def http_error_text(code: int, reason: str, url: str) -> str:
    """How a ``requests.HTTPError`` from IceProd's API reads in an action's ``error_message``."""
    kind = "Client" if code < 500 else "Server"
    return f"{code} {kind} Error: {reason} for url: {url}"
