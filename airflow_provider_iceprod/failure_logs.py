"""Why did IceProd fail? The tail of the failed tasks' own logs, for the Airflow task log.

When a wait ends in ``errors`` or a stall, the user should see IceProd's reason without leaving
Airflow. :func:`failed_task_logs` (and its async twin) read the first :data:`MAX_TASKS` failed tasks
(by name, then job index), and for each the last :data:`MAX_LINES` lines of ``stderr``, then
``stdlog``. Secrets are masked (Airflow's masker plus bearer tokens and JWTs). A task without logs
(IceProd answers ``404 Log not found``) is said so plainly; any other error reading the logs is
reported in one line. Nothing here raises: the wait's own error is what the task fails with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_iceprod.exceptions import IceProdNotFoundError

if TYPE_CHECKING:
    from airflow_provider_iceprod.hooks.iceprod import IceProdHook

#: Failed tasks whose logs are shown.
MAX_TASKS = 3
#: Lines shown from the end of each log.
MAX_LINES = 20
#: Which logs, in this order.
LOG_NAMES = ("stderr", "stdlog")
#: Outcomes of a wait that get the logs.
FAILED_OUTCOMES = ("errors", "stalled")

_TASK_KEYS = ["task_id", "name", "job_index"]
_SECRET_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),  # a JWT
    re.compile(
        r"(?i)((?:refresh_token|access_token|client_secret|password)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"
    ),
)


def mask(text: str) -> str:
    """Hide secrets: whatever Airflow's masker knows, plus bearer tokens, JWTs and ``token=...``."""
    try:
        from airflow.sdk.log import redact  # type: ignore[attr-defined]

        text = str(redact(text))
    except Exception:  # the patterns below still apply
        pass
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + "***", text)
    return text


def _first_failed(tasks: Mapping[str, Mapping[str, Any]], limit: int) -> list[dict[str, Any]]:
    rows = [dict(task, task_id=task.get("task_id") or task_id) for task_id, task in tasks.items()]
    rows.sort(key=lambda t: (str(t.get("name") or ""), int(t.get("job_index") or 0), str(t["task_id"])))
    return rows[:limit]


def _tail(data: str, max_lines: int) -> tuple[list[str], int]:
    lines = data.rstrip("\n").splitlines()
    return lines[-max_lines:], len(lines)


def _task_header(task: Mapping[str, Any]) -> str:
    name = task.get("name") or "?"
    job = task.get("job_index")
    where = f"job {job}, " if job is not None else ""
    return f"IceProd logs of failed task {name} ({where}task {task['task_id']}):"


def _render_logs(task: Mapping[str, Any], logs: list[dict[str, Any]] | BaseException, max_lines: int) -> str:
    lines = [_task_header(task)]
    if isinstance(logs, IceProdNotFoundError):
        lines.append("  IceProd has no logs for this task (404 Log not found).")
        return "\n".join(lines)
    if isinstance(logs, BaseException):
        lines.append(f"  Could not read its logs: {type(logs).__name__}: {mask(str(logs))}")
        return "\n".join(lines)
    latest: dict[str, str] = {}
    for entry in logs:  # newest last wins when IceProd returns several per name
        name = str(entry.get("name") or "")
        if name in LOG_NAMES:
            latest[name] = str(entry.get("data") or "")
    for name in LOG_NAMES:
        if name not in latest:
            lines.append(f"  {name}: none in IceProd")
            continue
        tail, total = _tail(latest[name], max_lines)
        if not tail:
            lines.append(f"  {name}: empty")
            continue
        shown = f"last {len(tail)} of {total} lines" if total > len(tail) else f"{total} line(s)"
        lines.append(f"  {name} ({shown}):")
        lines.extend(f"    {mask(line)}" for line in tail)
    return "\n".join(lines)


def _header(total: int, shown: int) -> str:
    more = f" (the first {shown} of {total})" if total > shown else ""
    return f"{total} failed IceProd task(s){more}; the end of their logs:"


def failed_task_logs(
    hook: IceProdHook, dataset_id: str, *, max_tasks: int = MAX_TASKS, max_lines: int = MAX_LINES
) -> list[str]:
    """One text block per failed task (at most ``max_tasks``), plus a header; [] when none failed."""
    try:
        tasks = hook.list_tasks(dataset_id, status="failed", keys=_TASK_KEYS)
    except Exception as exc:
        return [f"Could not list the failed IceProd tasks: {type(exc).__name__}: {mask(str(exc))}"]
    chosen = _first_failed(tasks, max_tasks)
    blocks = [_header(len(tasks), len(chosen))] if chosen else []
    for task in chosen:
        logs: list[dict[str, Any]] | BaseException
        try:
            logs = hook.task_logs(dataset_id, task["task_id"], group=True)
        except Exception as exc:
            logs = exc
        blocks.append(_render_logs(task, logs, max_lines))
    return blocks


async def afailed_task_logs(
    hook: IceProdHook, dataset_id: str, *, max_tasks: int = MAX_TASKS, max_lines: int = MAX_LINES
) -> list[str]:
    """:func:`failed_task_logs` on the event loop (the logs of the tasks are read concurrently)."""
    import asyncio

    try:
        tasks = await hook.alist_tasks(dataset_id, status="failed", keys=_TASK_KEYS)
    except Exception as exc:
        return [f"Could not list the failed IceProd tasks: {type(exc).__name__}: {mask(str(exc))}"]
    chosen = _first_failed(tasks, max_tasks)
    results = await asyncio.gather(
        *(hook.atask_logs(dataset_id, task["task_id"], group=True) for task in chosen),
        return_exceptions=True,
    )
    blocks = [_header(len(tasks), len(chosen))] if chosen else []
    blocks.extend(_render_logs(task, logs, max_lines) for task, logs in zip(chosen, results, strict=True))
    return blocks


def log_failed_task_logs(hook: IceProdHook, dataset_id: str, log: Any) -> None:
    """Write :func:`failed_task_logs` to ``log`` (warning level); never raises."""
    try:
        for block in failed_task_logs(hook, dataset_id):
            log.warning("%s", block)
    except Exception as exc:  # a courtesy: the wait's own failure stands
        log.warning("Could not read the failed IceProd tasks' logs: %s", type(exc).__name__)


async def alog_failed_task_logs(hook: IceProdHook, dataset_id: str, log: Any) -> None:
    try:
        for block in await afailed_task_logs(hook, dataset_id):
            log.warning("%s", block)
    except Exception as exc:
        log.warning("Could not read the failed IceProd tasks' logs: %s", type(exc).__name__)
