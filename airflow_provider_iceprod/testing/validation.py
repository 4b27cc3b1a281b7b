"""Dataset-config checks as IceProd 3.2.43's server makes them, independent of the provider's validator.

The stand-in must not reuse :mod:`airflow_provider_iceprod.dataset_config`: drift between the provider
and IceProd could then never show. This module follows ``iceprod.core.config`` instead, and the
fidelity tier (``tests/fidelity``) checks its answers against IceProd's own code:

* ``fill_defaults``: walk the config next to the schema; every property missing from the config gets
  the schema's (or its ``$ref`` target's) ``default``; objects and arrays of objects are filled
  recursively. The schema is the one of the config's ``version``; without a version it is **3.1**.
* ``validate``: ``jsonschema.validate`` with the schema of ``version`` (``best_match`` error);
  messages read ``Validation error in config['tasks'][0]: ...`` (the failing subschema's
  ``error_msg`` if it has one, else jsonschema's first line).

The 3.1 schema is not shipped; it is built from the 3.2 one by undoing the changes IceProd made in 3.2
(see :func:`schema`).

``PUT /config/{id}`` validates a filled copy and stores the body as sent; ``POST /actions/submit``
forces version 3.2, fills, validates and queues the filled config; ``/actions/edit_config`` fills and
validates with the config's own version (3.1 when it has none).
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable
from typing import Any

from airflow_provider_iceprod.testing.states import ApiError

_MINIMAL = {"version": 3.2, "tasks": [{"name": "t", "trays": [{"modules": [{"src": "/bin/true"}]}]}]}


class ConfigValidationError(Exception):
    """IceProd's ``ValidationError``: ``str()`` is the 400 reason."""


@functools.cache
def schema(version: float = 3.1) -> dict[str, Any]:
    """IceProd's dataset-config schema of ``version`` (3.1 or 3.2), as the stand-in models it.

    Built from the project's schema file with the defaults IceProd's own 3.2 schema has and that file
    lacks (``depends: []``, ``requirements: {}``); 3.1 undoes what IceProd changed in 3.2 (no such
    defaults, no data/``task_files`` conditionals, ``data`` allowed on trays and modules, version 3.1).
    """
    from importlib.resources import files

    text = files("airflow_provider_iceprod").joinpath("data", "dataset_v3.2.schema.json").read_text("utf-8")
    v32: dict[str, Any] = json.loads(text)
    defs = v32["$defs"]
    defs["requirements"]["default"] = {}
    defs["task"]["properties"]["depends"]["default"] = []
    version = round(float(version), 1)
    if version == 3.2:
        return v32
    if version != 3.1:
        raise FileNotFoundError(f"dataset_v{version}.schema.json")
    v31 = copy.deepcopy(v32)
    defs = v31["$defs"]
    for key in ("if", "then", "else", "required"):
        defs["data_item"].pop(key, None)
    defs["requirements"].pop("default", None)
    task = defs["task"]
    for key in ("if", "then", "else", "allOf"):
        task.pop(key, None)
    task["properties"]["depends"].pop("default", None)
    for name in ("tray", "module"):
        defs[name].pop("additionalProperties", None)
        defs[name]["properties"]["data"] = {"$ref": "#/$defs/data", "deprecated": True}
    v31["properties"]["version"]["default"] = 3.1
    return v31


def fill_defaults(config: dict[str, Any]) -> None:
    """Fill ``config`` in place like ``iceprod.core.config.Config.fill_defaults``."""
    version = config.get("version")
    if isinstance(version, str):
        version = float(version)
    root = schema(version) if version else schema()

    def deref(value: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in value:
            target: Any = root
            for part in value["$ref"].split("/")[1:]:
                target = target.get(part, {})
            return dict(target)
        return value

    def fill_dict(user: dict[str, Any], sch: dict[str, Any]) -> None:
        sch = deref(sch)
        for prop, prop_schema in sch["properties"].items():
            default = deref(prop_schema).get("default")
            if prop not in user and default is not None:
                user[prop] = copy.deepcopy(default)
        for key in user:
            sub = deref(sch["properties"].get(key, {}))
            kind = sub.get("type", "str")
            if isinstance(user[key], dict) and kind == "object":
                fill_dict(user[key], sub)
            elif isinstance(user[key], list) and kind == "array":
                items = deref(sub.get("items", {}))
                for item in user[key]:
                    if isinstance(item, dict) and "properties" in items:
                        fill_dict(item, items)

    fill_dict(config, root)


def validate(config: dict[str, Any]) -> None:
    """Raise :class:`ConfigValidationError` like ``iceprod.core.config.Config.validate``."""
    import jsonschema

    version = config["version"]
    if isinstance(version, str):
        version = float(version)
        config["version"] = version
    try:
        _check(config, version)
    except jsonschema.ValidationError as exc:
        path = "".join(f"[{p!r}]" for p in exc.path)
        if isinstance(exc.schema, Iterable) and "error_msg" in exc.schema:
            message = exc.schema["error_msg"]  # type: ignore[index]
        else:
            message = str(exc).split("\n", 1)[0]
        raise ConfigValidationError(f"Validation error in config{path}: {message}") from exc


@functools.cache
def _validator(version: float) -> Any:
    """A validator for ``schema(version)``, built once: ``jsonschema.validate`` would check the
    schema itself against its metaschema on every call (97 % of a submit's time in the stand-in)."""
    import jsonschema

    sch = schema(version)
    cls = jsonschema.validators.validator_for(sch)
    cls.check_schema(sch)
    return cls(sch)


def _check(config: dict[str, Any], version: float) -> None:
    """What ``jsonschema.validate(config, schema(version))`` does, with the validator built once."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_validator(version).iter_errors(config))
    if error is not None:
        raise error


def warm_up() -> None:
    """Load jsonschema and the schemas once, before the server answers requests."""
    check_config(copy.deepcopy(_MINIMAL))


def check_config(config: dict[str, Any]) -> dict[str, Any]:
    """Fill and validate ``config`` in place; returns it."""
    fill_defaults(config)
    validate(config)
    return config


def check_config_for_put(config: Any) -> None:
    """``PUT /config/{id}``: validates a filled copy (the caller stores the body as sent)."""
    try:
        check_config(copy.deepcopy(config))
    except ConfigValidationError as exc:
        raise ApiError(400, str(exc)) from None
    except Exception:
        raise ApiError(400, "unknown validation error") from None


def check_config_for_submit(config_text: Any) -> str:
    """``POST /actions/submit``: the version forced to 3.2, filled and validated, as queued JSON."""
    return _checked_json(config_text, version=3.2)


def check_config_for_edit(config_text: Any) -> str:
    """``/actions/edit_config``: filled and validated with the config's own version (3.1 without)."""
    return _checked_json(config_text)


def _checked_json(config_text: Any, version: float | None = None) -> str:
    try:
        config = json.loads(config_text)
        if version is not None:
            config["version"] = version
        check_config(config)
    except ConfigValidationError as exc:
        raise ApiError(400, str(exc)) from None
    except Exception:
        raise ApiError(400, "config is not valid") from None
    import tornado.escape

    return tornado.escape.json_encode(config)
