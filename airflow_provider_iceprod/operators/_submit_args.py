"""The submit operator's argument checks: every rendered argument, before anything is sent.

Nothing here touches the network or the connection; ``dry_run`` stops after these checks.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from airflow_provider_iceprod.exceptions import IceProdConfigError, IceProdDatasetConfigError
from airflow_provider_iceprod.operators._common import finite_number, positive_int

GROUPS = ("users", "simprod", "filtering", "admin")
#: Optional ``POST /datasets`` fields IceProd accepts in ``extra_submit_fields``, with their types.
EXTRA_SUBMIT_FIELDS: dict[str, tuple[type, ...]] = {
    "priority": (int, float),
    "debug": (bool,),
    "jobs_immutable": (bool,),
    "always_active": (bool,),
    "status": (str,),
    "auth_groups_read": (list,),
}


def parse_config(value: Any) -> dict[str, Any]:
    """The rendered ``config`` argument as a dict: a dict, or JSON / YAML text (a rendered file)."""
    if isinstance(value, Mapping):
        return copy.deepcopy(dict(value))
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise IceProdDatasetConfigError("The dataset config is empty.", field="config")
        try:
            parsed = json.loads(text)
        except ValueError:
            import yaml

            try:
                parsed = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise IceProdDatasetConfigError(
                    f"The dataset config is neither valid JSON nor valid YAML: {exc}", field="config"
                ) from None
        if isinstance(parsed, Mapping):
            return dict(parsed)
        raise IceProdDatasetConfigError(
            f"The dataset config must be a JSON/YAML object (or a .json/.yaml/.yml file name), got "
            f"{type(parsed).__name__}: {text[:80]!r}",
            field="config",
        )
    raise IceProdDatasetConfigError(
        f"The dataset config must be a dict, JSON/YAML text or a .json/.yaml/.yml file name, got "
        f"{type(value).__name__}.",
        field="config",
    )


def seconds(value: float | timedelta | None, field: str) -> float | None:
    """A duration > 0 in seconds (a number or a ``timedelta``); None stays None."""
    if value is None:
        return None
    number = value.total_seconds() if isinstance(value, timedelta) else finite_number(value, field=field)
    if number <= 0:
        raise IceProdConfigError(f"{field!r} must be > 0 seconds, got {value!r}.", field=field)
    return number


def extra_fields(
    extra_submit_fields: Mapping[str, Any] | None, *, priority: Any, start_suspended: bool, debug: bool
) -> dict[str, Any]:
    """``extra_submit_fields`` merged with the ``priority``/``start_suspended``/``debug`` arguments."""
    extra = dict(extra_submit_fields or {})
    unknown = sorted(set(extra) - set(EXTRA_SUBMIT_FIELDS))
    if unknown:
        raise IceProdConfigError(
            f"extra_submit_fields: unknown field(s) {unknown}; IceProd accepts "
            f"{sorted(EXTRA_SUBMIT_FIELDS)} "
            "(description, jobs_submitted and group are arguments of their own).",
            field="extra_submit_fields",
        )
    if priority is not None:
        extra["priority"] = priority
    if start_suspended:
        extra["status"] = "suspended"
    if debug:
        extra["debug"] = True
    for key, value in extra.items():
        types = EXTRA_SUBMIT_FIELDS[key]
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            raise IceProdConfigError(
                f"extra_submit_fields[{key!r}] must be {' or '.join(t.__name__ for t in types)}, "
                f"got {value!r}.",
                field=f"extra_submit_fields.{key}",
            )
    if "priority" in extra:
        extra["priority"] = finite_number(extra["priority"], field="priority")  # IceProd wants a float
    if extra.get("status") not in (None, "processing", "suspended"):
        raise IceProdConfigError(
            f"extra_submit_fields['status'] must be 'processing' or 'suspended', got {extra['status']!r}.",
            field="extra_submit_fields.status",
        )
    return extra


def check_submit_args(
    *,
    config: Any,
    description: Any,
    jobs_submitted: Any,
    group: Any,
    tasks_per_job: Any,
    extra_submit_fields: dict[str, Any],
    low_level: bool,
) -> dict[str, Any]:
    """Check the rendered submit arguments; return them as the hook's ``submit_dataset`` takes them."""
    from airflow_provider_iceprod.dataset_config import validate_config

    parsed = parse_config(config)
    per_job = None if tasks_per_job is None else positive_int(tasks_per_job, field="tasks_per_job")
    # The hook sends "version": 3.2 on both submit paths, as IceProd's /actions/submit does.
    validate_config(parsed, strict=True, tasks_per_job=per_job, force_version=True)
    if not parsed.get("tasks"):  # IceProd's schema allows it, but the dataset could never run
        raise IceProdDatasetConfigError(
            "Validation error in config['tasks']: a dataset needs at least one task",
            field="config['tasks']",
        )
    if not isinstance(description, str) or not description.strip():
        raise IceProdConfigError(
            f"'description' must be a non-empty string, got {description!r}.", field="description"
        )
    checked_group = group.strip() if isinstance(group, str) else group
    if checked_group not in GROUPS:
        raise IceProdConfigError(f"'group' must be one of {list(GROUPS)}, got {group!r}.", field="group")
    return {
        "config": parsed,
        "description": description.strip(),
        "jobs_submitted": positive_int(jobs_submitted, field="jobs_submitted"),
        "group": checked_group,
        "extra_submit_fields": extra_submit_fields or None,
        "low_level": bool(low_level),
    }
