"""Input checks, written once: every rule about what may be sent to IceProd.

Pure functions (no I/O, no Airflow): the hook, the operators, the sensor and the trigger all call
these, so a value means the same everywhere. Each raises
:class:`~airflow_provider_iceprod.exceptions.IceProdConfigError` naming the field, before any request
is sent. See ``docs/architecture.md`` ("The api package").
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Required, TypedDict

from airflow_provider_iceprod.exceptions import IceProdConfigError
from airflow_provider_iceprod.models import JOB_STATUSES, TASK_STATUSES

GROUPS = ("users", "simprod", "filtering", "admin")
ACTION_NAMES = ("dataset_status", "job_status", "task_status")
STATUS_ACTIONS = ("reset", "hard_reset", "suspend")
#: Task requirements IceProd knows, by type: integers, numbers (GB, hours), list of str, str.
INT_REQUIREMENTS = ("cpu", "gpu")
FLOAT_REQUIREMENTS = ("memory", "disk", "time")
REQUIREMENT_KEYS = (*INT_REQUIREMENTS, *FLOAT_REQUIREMENTS, "os", "site")
#: Extra ``POST /datasets`` fields (``extra_submit_fields``); the core fields are submit arguments.
EXTRA_DATASET_FIELDS = ("priority", "debug", "jobs_immutable", "always_active", "status", "auth_groups_read")
#: The statuses a new dataset may start in (``extra_submit_fields["status"]``).
START_STATUSES = ("processing", "suspended")
DEFAULT_RECONCILE_GRACE = 120.0

_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
_MARKER = re.compile(r"^[^\[\]\s]{1,200}$")


def bad(field: str, message: str) -> IceProdConfigError:
    """The one error type of this module (``field`` names the argument)."""
    return IceProdConfigError(message, field=field)


# --------------------------------------------------------------------------------------------------
# Ids and dataset references
# --------------------------------------------------------------------------------------------------


def object_id(value: Any, kind: str = "dataset_id") -> str:
    """A 32-hex IceProd id (dataset, job, task, log), checked before it goes into a URL."""
    if not isinstance(value, str) or not _HEX32.match(value):
        raise bad(kind, f"{kind} must be a 32-character hex IceProd id, got {value!r}.")
    return value.lower()


def dataset_ref(value: Any, *, field: str = "dataset") -> str | int:
    """THE dataset-reference parser: a 32-hex id (returned lower-case, a ``str``) or a dataset
    number (returned as an ``int``; a string of digits works).

    A mapping with ``dataset_id`` (or ``dataset``), as the submit operator pushes to XCom, is read
    too. Anything else raises ``IceProdConfigError(field=field)``.
    """
    if isinstance(value, Mapping):
        value = value.get("dataset_id", value.get("dataset"))
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit() and int(text) > 0:
            return int(text)
        if _HEX32.match(text):
            return text.lower()
    raise bad(
        field,
        f"{field!r} must be an IceProd dataset id (32 hex characters), a dataset number (a positive "
        f"integer) or the submit operator's XCom, got {value!r}. From an upstream submit task use "
        "\"{{ ti.xcom_pull(task_ids='submit', key='dataset_id') }}\" or the task's .output.",
    )


def id_list(values: Any, kind: str) -> list[str]:
    """A non-empty list of 32-hex ids (at most 100,000, IceProd's limit per request)."""
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise bad(kind, f"{kind} must be a list of 32-hex ids, got {values!r}.")
    ids = [object_id(v, kind) for v in values]
    if not ids:
        raise bad(kind, f"{kind} is empty.")
    if len(ids) > 100_000:
        raise bad(kind, f"{kind} has {len(ids)} ids; IceProd takes at most 100,000 per request.")
    return ids


# --------------------------------------------------------------------------------------------------
# Numbers (a rendered template gives text, so numeric text is read too)
# --------------------------------------------------------------------------------------------------


def positive_int(value: Any, field: str, *, allow_zero: bool = False) -> int:
    """An integer > 0 (>= 0 with ``allow_zero``): an int, an integral float or a string of digits."""
    number: int | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or number < 0 or (number == 0 and not allow_zero):
        kind = "an integer >= 0" if allow_zero else "a positive integer"
        raise bad(field, f"{field!r} must be {kind}, got {value!r}.")
    return number


#: Job counts above this need ``allow_large=True`` (a typo such as ``10**12`` would otherwise make
#: IceProd materialize jobs for ever).
MAX_JOBS = 1_000_000


def job_count(value: Any, field: str, *, allow_large: bool = False, allow_zero: bool = False) -> int:
    """THE range check of job counts (``jobs_submitted``, ``add_jobs``): a positive integer (``>= 0``
    with ``allow_zero``), at most :data:`MAX_JOBS` unless ``allow_large``."""
    number = positive_int(value, field, allow_zero=allow_zero)
    if number > MAX_JOBS and not allow_large:
        raise bad(
            field,
            f"{field!r} is {number:,}, more than {MAX_JOBS:,} jobs; pass allow_large=True if you mean it.",
        )
    return number


def finite_number(value: Any, field: str, *, minimum: float | None = None, positive: bool = False) -> float:
    """A finite number (int, float or numeric text), ``>= minimum`` and ``> 0`` if ``positive``."""
    number: float | None = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if number is None or not math.isfinite(number):
        raise bad(field, f"{field!r} must be a number, got {value!r}.")
    if positive and number <= 0:
        raise bad(field, f"{field!r} must be a number > 0, got {value!r}.")
    if minimum is not None and number < minimum:
        raise bad(field, f"{field!r} must be a number >= {minimum:g}, got {value!r}.")
    return number


# --------------------------------------------------------------------------------------------------
# Names and multi-value parameters
# --------------------------------------------------------------------------------------------------


def one_of(value: Any, allowed: Iterable[str], kind: str) -> str:
    """``value`` if it is one of ``allowed`` (IceProd's statuses, actions, ...)."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise bad(kind, f"Unknown {kind} {value!r}; IceProd knows {', '.join(allowed)}.")
    return str(value)


def group_name(value: Any) -> str:
    """An IceProd group for a submit (surrounding spaces are dropped)."""
    name = value.strip() if isinstance(value, str) else value
    if name not in GROUPS:
        raise bad("group", f"'group' must be one of {', '.join(GROUPS)}, got {value!r}.")
    return str(name)


def joined(value: Any, kind: str, allowed: Iterable[str] | None = None) -> str | None:
    """IceProd's multi-value parameter: ``a|b|c`` from a string or a list of strings."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    if not items or not all(isinstance(item, str) and item and "|" not in item for item in items):
        raise bad(kind, f"{kind} must be a string or a list of non-empty strings, got {value!r}.")
    if allowed is not None:
        for item in items:
            one_of(item, allowed, kind)
    return "|".join(items)


def task_requirements(requirements: Any, field: str = "requirements") -> dict[str, Any]:
    """Resource requirements for the tasks of one name: ``cpu``/``gpu`` (int), ``memory``/``disk``
    (GB) and ``time`` (hours) as numbers, ``os`` (list of str), ``site`` (str)."""
    if not isinstance(requirements, Mapping) or not requirements:
        raise bad(field, f"{field} must be a non-empty dict of resources, e.g. {{'memory': 4.0}}.")
    unknown = sorted(set(requirements) - set(REQUIREMENT_KEYS))
    if unknown:
        raise bad(
            field,
            f"Unknown requirement(s) {unknown} in {field}; IceProd knows {', '.join(REQUIREMENT_KEYS)}.",
        )
    out: dict[str, Any] = {}
    for key, value in requirements.items():
        where = f"{field}[{key!r}]"
        if key in INT_REQUIREMENTS:
            out[key] = positive_int(value, where, allow_zero=True)
        elif key in FLOAT_REQUIREMENTS:
            out[key] = finite_number(value, where, minimum=0)
        elif key == "os":
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise bad(where, f"{where} must be a list of strings, got {value!r}.")
            out[key] = list(value)
        else:
            out[key] = str(value)
    return out


def status_action_body(
    name: str,
    action: str,
    *,
    initial_status: str | None = None,
    job_ids: Iterable[str] | None = None,
    task_ids: Iterable[str] | None = None,
) -> dict[str, Any]:
    """The body of ``/actions/dataset_status|job_status|task_status`` (without the dataset id)."""
    name = one_of(name, ACTION_NAMES, "action name")
    body: dict[str, Any] = {"action": one_of(action, STATUS_ACTIONS, "action")}
    selectors = [s for s in (initial_status, job_ids, task_ids) if s is not None]
    if name == "dataset_status" and selectors:
        raise bad("initial_status", "dataset_status takes no initial_status, job_ids or task_ids.")
    if len(selectors) > 1:
        raise bad("initial_status", "Give at most one of initial_status, job_ids, task_ids.")
    if task_ids is not None and name != "task_status":
        raise bad("task_ids", "task_ids works with task_status only.")
    if initial_status is not None:
        allowed = TASK_STATUSES if name == "task_status" else JOB_STATUSES
        body["initial_status"] = one_of(initial_status, allowed, "initial_status")
    if job_ids is not None:
        body["job_ids"] = id_list(job_ids, "job_ids")
    if task_ids is not None:
        body["task_ids"] = id_list(task_ids, "task_ids")
    return body


def action_name(name: Any) -> str:
    if not isinstance(name, str) or not re.match(r"^[a-z_]{1,64}$", name):
        raise bad("name", f"Not an IceProd action name: {name!r}.")
    return name


def action_request_id(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^[0-9A-Za-z_-]{1,64}$", value):
        raise bad("request_id", f"Not an IceProd action request id: {value!r}.")
    return value


# --------------------------------------------------------------------------------------------------
# Submit
# --------------------------------------------------------------------------------------------------


def marker_tag(marker: str) -> str:
    """The text put in a dataset's description to find it again: ``[airflow:<marker>]``."""
    if not isinstance(marker, str) or not _MARKER.match(marker):
        raise bad(
            "marker", f"marker must be 1-200 characters without spaces or square brackets, got {marker!r}."
        )
    return f"[airflow:{marker}]"


def new_marker() -> str:
    """A random marker for direct hook use (operators derive theirs from the task instance)."""
    return f"hook-{uuid.uuid4().hex[:16]}"


def extra_fields(extra: Mapping[str, Any] | None, *, low_level: bool = False) -> dict[str, Any]:
    """THE ``extra_submit_fields`` rule (IceProd silently drops unknown keys or fails them at run time).

    Keys: ``priority`` (a number, negative ones too, as IceProd accepts them; sent as a float:
    IceProd refuses ``1``), ``debug``,
    ``jobs_immutable``, ``always_active`` (bools), ``status`` (``processing`` or ``suspended``),
    ``auth_groups_read`` (list of groups) and, on the low-level path only, ``username``.
    """
    if extra is None:
        return {}
    if not isinstance(extra, Mapping):
        raise bad("extra_submit_fields", f"extra_submit_fields must be a dict, got {type(extra).__name__}.")
    allowed = (*EXTRA_DATASET_FIELDS, "username") if low_level else EXTRA_DATASET_FIELDS
    out: dict[str, Any] = {}
    for key, value in extra.items():
        where = f"extra_submit_fields.{key}"
        if key not in allowed:
            raise bad(
                "extra_submit_fields",
                f"extra_submit_fields key {key!r} is not allowed; use {', '.join(allowed)} "
                "(description, jobs_submitted and group are arguments of the submit).",
            )
        if key == "priority":
            out[key] = finite_number(value, where)
        elif key in ("debug", "jobs_immutable", "always_active"):
            if not isinstance(value, bool):
                raise bad(where, f"{where} must be true or false, got {value!r}.")
            out[key] = value
        elif key == "status":
            if value not in START_STATUSES:
                raise bad(where, f"{where} must be {' or '.join(START_STATUSES)}, got {value!r}.")
            out[key] = value
        elif key == "auth_groups_read":
            if not isinstance(value, list | tuple) or not all(isinstance(g, str) and g for g in value):
                raise bad(where, f"{where} must be a list of groups, got {value!r}.")
            unknown = [g for g in value if g not in GROUPS]
            if unknown:  # IceProd would insert the dataset, fail, and retry: orphans (iceprod-quirks.md, 7)
                raise bad(
                    where, f"{where}: unknown group(s) {unknown}; IceProd's groups are {', '.join(GROUPS)}."
                )
            out[key] = list(value)
        else:
            if not isinstance(value, str) or not value:
                raise bad(where, f"{where} must be a user name, got {value!r}.")
            out[key] = value
    return out


class SubmitArgs(TypedDict, total=False):
    """The keyword arguments of :func:`check_submit` (and of ``IceProdHook.submit_dataset``)."""

    description: Required[str]
    jobs_submitted: Required[int]
    group: str
    extra_submit_fields: Mapping[str, Any] | None
    marker: str | None
    low_level: bool
    materialize: bool
    timeout: float
    reconcile_grace: float
    tasks_per_job: int | None
    allow_large: bool


@dataclass(frozen=True)
class SubmitRequest:
    """A checked submit, built by :func:`check_submit` before any request is sent."""

    config: dict[str, Any]
    description: str
    jobs_submitted: int
    group: str
    extra: dict[str, Any]
    tag: str
    low_level: bool
    materialize: bool
    timeout: float
    reconcile_grace: float

    @property
    def tasks_per_job(self) -> int:
        return len(self.config.get("tasks", []))

    def submit_body(self) -> dict[str, Any]:
        """``POST /actions/submit``."""
        body: dict[str, Any] = {
            "config": json.dumps(self.config),
            "description": self.description,
            "jobs_submitted": self.jobs_submitted,
            "group": self.group,
        }
        if self.extra:
            body["extra_submit_fields"] = json.dumps(self.extra)
        return body

    def create_body(self) -> dict[str, Any]:
        """``POST /datasets`` (the low-level path)."""
        return {
            "description": self.description,
            "jobs_submitted": self.jobs_submitted,
            "tasks_submitted": self.jobs_submitted * self.tasks_per_job,
            "tasks_per_job": self.tasks_per_job,
            "group": self.group,
            **self.extra,
        }


def check_submit(
    config: Any,
    *,
    description: Any,
    jobs_submitted: Any,
    group: Any = "users",
    extra_submit_fields: Mapping[str, Any] | None = None,
    marker: str | None = None,
    low_level: bool = False,
    materialize: bool = False,
    timeout: Any = 900.0,
    reconcile_grace: Any = DEFAULT_RECONCILE_GRACE,
    tasks_per_job: int | None = None,
    allow_large: bool = False,
) -> SubmitRequest:
    """Check everything about a submit, the dataset config included (the one validation per submit).

    ``tasks_per_job``, when given, is the number of tasks the config must have;
    ``allow_large`` lets ``jobs_submitted`` exceed :data:`MAX_JOBS`.
    """
    from airflow_provider_iceprod.dataset_config import validate_config
    from airflow_provider_iceprod.exceptions import IceProdDatasetConfigError

    if tasks_per_job is not None:
        tasks_per_job = positive_int(tasks_per_job, "tasks_per_job")
    # filled like IceProd fills it: PUT /config (the low-level path) stores the body as sent, and a
    # config without its defaults breaks every later edit_config (docs/iceprod-quirks.md, 8)
    filled = validate_config(config, strict=True, tasks_per_job=tasks_per_job, force_version=True)
    if not config.get("tasks"):  # IceProd's schema allows it, but the dataset could never run
        raise IceProdDatasetConfigError(
            "Validation error in config['tasks']: a dataset needs at least one task", field="config['tasks']"
        )
    if not isinstance(description, str) or not description.strip():
        raise bad("description", f"'description' must be a non-empty string, got {description!r}.")
    # 0 is IceProd's own "jobs come later" (add_jobs): the submit makes an empty dataset (quirk 10)
    jobs = job_count(jobs_submitted, "jobs_submitted", allow_large=allow_large, allow_zero=True)
    extra = extra_fields(extra_submit_fields, low_level=low_level)
    tag = marker_tag(marker if marker is not None else new_marker())
    return SubmitRequest(
        config=filled,
        description=f"{description.strip()} {tag}",
        jobs_submitted=jobs,
        group=group_name(group),
        extra=extra,
        tag=tag,
        low_level=bool(low_level),
        materialize=bool(materialize),
        timeout=finite_number(timeout, "timeout", positive=True),
        reconcile_grace=finite_number(reconcile_grace, "reconcile_grace", minimum=0),
    )
