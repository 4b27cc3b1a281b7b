"""Client-side check of IceProd dataset configs (format version 3.2).

IceProd fills a config's defaults and validates it against its v3.2 JSON Schema when it receives
``PUT /config/{id}`` or ``POST /actions/submit``. This module does the same on the client, with the
project's own schema (``data/dataset_v3.2.schema.json``), so a bad config fails before any request
is sent, and with IceProd's wording::

    Validation error in config['tasks'][0]['trays']: [] should be non-empty

``strict=True`` adds checks IceProd itself does not make at submit time but that break the dataset
later (``depends`` naming earlier tasks or raw task ids, no ``"<dataset_id>:<task>"`` depends, the task
count). Duplicate task names are allowed, as in IceProd (a name in ``depends`` means the last task of
that name). What IceProd does is in docs/iceprod-quirks.md.

Macros such as ``$(dataset)`` or ``$eval(...)`` are never expanded here: IceProd expands them itself.
jsonschema is imported lazily, so importing this module stays cheap.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_iceprod.exceptions import IceProdDatasetConfigError

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator, ValidationError

__all__ = ["SUPPORTED_VERSION", "fill_defaults", "load_schema", "task_names", "validate_config"]

SUPPORTED_VERSION = 3.2
_SCHEMA_FILE = "dataset_v3.2.schema.json"
_ROOT = "config"
_RAW_TASK_ID = re.compile(r"[0-9a-f]{32}")


# --------------------------------------------------------------------------------------------------
# public interface
# --------------------------------------------------------------------------------------------------


def fill_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return a deep copy of ``config`` with IceProd's v3.2 defaults filled in.

    Like IceProd, a default is added only where its parent object exists: the top level gets
    ``version`` 3.2, ``description`` "Test Dataset", ``options`` and ``steering``; every task gets
    ``depends`` ([]), ``requirements``, ``data``, ``parameters``, ``batchsys``, ``container``,
    ``token_scopes`` and ``task_files``; every tray ``name``, ``iterations`` (1) and ``parameters``;
    every module ``name``, ``src``, ``args``, ``env_shell``, ``env_clear`` (true), ``configs``,
    ``parameters`` and ``running_class``; ``requirements`` gets ``cpu`` 1, ``memory``/``disk``/``time``
    1.0 and ``os`` [] (measured against IceProd 3.2.43 by tests/fidelity). The copy is made through JSON, so it holds exactly what IceProd would receive.
    The input is not changed and macros are not expanded.

    Raises:
        IceProdDatasetConfigError: ``config`` is not a JSON object or not JSON-serializable.
    """
    copy = _json_copy(config)
    schema = load_schema()
    _fill_object(copy, schema, schema)
    return copy


def validate_config(
    config: Any,
    *,
    strict: bool = False,
    tasks_per_job: int | None = None,
    force_version: bool = False,
) -> dict[str, Any]:
    """Fill defaults and validate ``config`` as IceProd 3.2 does; return the filled copy.

    Args:
        config: the dataset config (a dict, as it would be sent as JSON).
        strict: also check what IceProd only notices later: task names are unique, every
            ``depends`` entry names an earlier task of this config (or is a
            ``"<dataset_id>:<task>"`` reference to another dataset), and, when
            ``tasks_per_job`` is given, the number of tasks equals it.
        tasks_per_job: the expected number of tasks (checked only with ``strict=True``).
        force_version: set ``version`` to 3.2 first, as ``POST /actions/submit`` does. Without it
            the config must say ``"version": 3.2``; IceProd would apply its v3.1 schema to a config
            without a version.

    Raises:
        IceProdDatasetConfigError: with IceProd's wording, e.g.
            ``Validation error in config['tasks'][0]['trays']: [] should be non-empty``; ``.field``
            is the path (``config['tasks'][0]['trays']``).
    """
    copy = _json_copy(config)
    _check_version(copy, force_version=force_version)
    schema = load_schema()
    _fill_object(copy, schema, schema)

    error = _first_schema_error(copy)
    if error is not None:
        raise _error(_render_path(error.absolute_path), _schema_error_message(error))
    if strict:
        problem = next(_strict_problems(copy, tasks_per_job), None)
        if problem is not None:
            raise _error(*problem)
    return copy


def task_names(config: Mapping[str, Any]) -> list[str]:
    """Names of the config's tasks, in order (``""`` for a task without a string name)."""
    tasks = config.get("tasks") if isinstance(config, Mapping) else None
    if not isinstance(tasks, list):
        return []
    names = []
    for task in tasks:
        name = task.get("name") if isinstance(task, Mapping) else None
        names.append(name if isinstance(name, str) else "")
    return names


@functools.cache
def load_schema() -> dict[str, Any]:
    """The project's v3.2 dataset-config JSON Schema (loaded once)."""
    from importlib.resources import files

    text = files("airflow_provider_iceprod").joinpath("data", _SCHEMA_FILE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


@functools.cache
def _validator() -> Draft202012Validator:
    from jsonschema import Draft202012Validator

    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _error(field: str, message: str) -> IceProdDatasetConfigError:
    return IceProdDatasetConfigError(f"Validation error in {field}: {message}", field=field)


def _render_path(path: Iterable[Any]) -> str:
    """``config['tasks'][0]['trays']``: IceProd renders each step with ``repr``."""
    return _ROOT + "".join(f"[{step!r}]" for step in path)


def _json_copy(config: Any) -> dict[str, Any]:
    """Deep copy through JSON: what the server would see (tuples become lists, and so on)."""
    if not isinstance(config, Mapping):
        raise IceProdDatasetConfigError(
            f"config is not valid: a dataset config must be a JSON object, not {type(config).__name__}",
            field=_ROOT,
        )

    def _mapping_to_dict(value: Any) -> Any:
        if isinstance(value, Mapping):
            return dict(value)
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    try:
        copy: dict[str, Any] = json.loads(json.dumps(config, default=_mapping_to_dict))
    except (TypeError, ValueError) as exc:
        raise IceProdDatasetConfigError(f"config is not valid: {exc}", field=_ROOT) from None
    return copy


def _check_version(config: dict[str, Any], *, force_version: bool) -> None:
    """Only v3.2 is supported; normalise ``"3.2"`` to ``3.2`` like IceProd does."""
    field = f"{_ROOT}['version']"
    if force_version:
        config["version"] = SUPPORTED_VERSION
        return
    if "version" not in config:
        raise _error(
            field,
            'missing: IceProd validates a config without "version" against its v3.1 schema; '
            'add "version": 3.2 (only version 3.2 is supported)',
        )
    version = config["version"]
    number = _version_number(version)
    if number is None or math.isnan(number) or round(number, 1) != SUPPORTED_VERSION:
        raise _error(field, f"only dataset config version 3.2 is supported, got {version!r}")
    config["version"] = number


def _version_number(version: Any) -> float | None:
    if isinstance(version, bool):
        return None
    if isinstance(version, int | float):
        return float(version)
    if isinstance(version, str):
        try:
            return float(version)
        except ValueError:
            return None
    return None


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (``#/$defs/...``); anything else is returned as is."""
    while "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema


def _fill_object(instance: dict[str, Any], schema: dict[str, Any], root: dict[str, Any]) -> None:
    properties: dict[str, Any] = _resolve(schema, root).get("properties", {})
    for key, subschema in properties.items():
        default = _resolve(subschema, root).get("default")
        if key not in instance and default is not None:
            instance[key] = json.loads(json.dumps(default))  # a fresh copy every time
    for key, value in instance.items():
        if key in properties:
            _fill_value(value, _resolve(properties[key], root), root)


def _fill_value(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> None:
    if isinstance(value, dict) and "properties" in schema:
        _fill_object(value, schema, root)
    elif isinstance(value, list) and "items" in schema:
        items = _resolve(schema["items"], root)
        for item in value:
            if isinstance(item, dict):
                _fill_object(item, items, root)


def _first_schema_error(config: dict[str, Any]) -> ValidationError | None:
    """The error IceProd would report: jsonschema's ``best_match`` (deterministic)."""
    from jsonschema.exceptions import best_match

    return best_match(_validator().iter_errors(config))


def _schema_error_message(error: ValidationError) -> str:
    """IceProd prefers the failing subschema's ``error_msg``; else jsonschema's first line."""
    if isinstance(error.schema, Mapping) and "error_msg" in error.schema:
        return str(error.schema["error_msg"])
    return error.message.split("\n", 1)[0]


def _strict_problems(config: dict[str, Any], tasks_per_job: int | None) -> Iterator[tuple[str, str]]:
    """Yield ``(field, message)`` for what IceProd accepts at submit but fails on later."""
    tasks: list[dict[str, Any]] = config["tasks"]
    # IceProd keys tasks by name, or by index for an empty name; a repeated name means its last task.
    index_of = {(task["name"] or str(index)): index for index, task in enumerate(tasks)}

    for index, task in enumerate(tasks):
        for position, dep in enumerate(task.get("depends", [])):
            field = f"{_ROOT}['tasks'][{index}]['depends'][{position}]"
            problem = _depends_problem(dep, index, index_of)
            if problem:
                yield field, problem

    if tasks_per_job is not None and len(tasks) != tasks_per_job:
        yield (
            f"{_ROOT}['tasks']",
            f"the config has {len(tasks)} task(s) but tasks_per_job is {tasks_per_job}",
        )


def _depends_problem(dep: str, own_index: int, index_of: dict[str, int]) -> str | None:
    # The schema already made ``dep`` a string: v3.2 has no integer task indexes in ``depends``.
    if dep in index_of:
        target = index_of[dep]
    elif _RAW_TASK_ID.fullmatch(dep):
        return None  # a task id (of any dataset): IceProd looks it up when it creates the job
    elif all(dep.partition(":")[::2]):
        return (
            f"{dep!r}: IceProd 3.2.43 cannot resolve '<dataset_id>:<task>' depends (its materialization "
            "fails on them, so the dataset never completes, or completes without this task); depend on "
            "the other dataset's task id instead"
        )
    else:
        known = ", ".join(repr(name) for name in index_of) or "none"
        return f"{dep!r} is not the name of a task in this config (tasks: {known})"
    if target == own_index:
        return f"{dep!r} is this task itself; a task cannot depend on itself"
    if target > own_index:
        return (
            f"{dep!r} is a later task ({_ROOT}['tasks'][{target}]); IceProd only allows "
            "dependencies on earlier tasks"
        )
    return None
