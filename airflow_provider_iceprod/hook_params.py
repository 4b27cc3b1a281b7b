"""``hook_params``: the hook's keyword arguments as one plain dict.

Operators, the sensor and the trigger take ``hook_params`` (``IceProdHook``'s keyword arguments
without the connection id) and build their hook with ``IceProdHook(conn_id, **hook_params)``. The
values are plain numbers, so the dict crosses into trigger kwargs unchanged. See
``docs/architecture.md`` ("Hook parameters").
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

from airflow_provider_iceprod.exceptions import IceProdConfigError


def hook_param_names() -> tuple[str, ...]:
    """The keys ``hook_params`` may hold: ``IceProdHook``'s keyword-only arguments."""
    from airflow_provider_iceprod.hooks.iceprod import IceProdHook

    parameters = inspect.signature(IceProdHook.__init__).parameters.values()
    return tuple(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def plain_hook_params(hook_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy of ``hook_params`` that is a dict of plain numbers (what crosses into trigger kwargs).

    Imports nothing: triggers call this in ``__init__``, which runs on the triggerer's event loop.
    Whether the hook accepts the keys and values is :func:`check_hook_params`' job.
    """
    if hook_params is None:
        return {}
    if not isinstance(hook_params, Mapping):
        raise IceProdConfigError(
            f"hook_params must be a dict of IceProdHook arguments, got {type(hook_params).__name__}.",
            field="hook_params",
        )
    params = {**hook_params}
    for key, value in params.items():
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, int | float):
            raise IceProdConfigError(
                f"hook_params[{key!r}] must be a plain number, got {value!r}.", field="hook_params"
            )
    return params


def check_hook_params(hook_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """A plain copy of ``hook_params``, checked by building a hook with it.

    Building the hook does no I/O (the connection is read on first use); an empty or ``None``
    ``hook_params`` is not even that, so a DAG without it never imports the hook while parsing.
    Raises ``IceProdConfigError(field="hook_params")`` for unknown keys and the hook's own error
    for bad values.
    """
    params = plain_hook_params(hook_params)
    if not params:
        return params
    from airflow_provider_iceprod.hooks.iceprod import IceProdHook

    names = hook_param_names()
    unknown = sorted(key for key in params if key not in names)
    if unknown:
        raise IceProdConfigError(
            f"hook_params: unknown key(s) {unknown}; IceProdHook takes {list(names)} "
            "(the connection id is an argument of its own).",
            field="hook_params",
        )
    IceProdHook(**params)  # the hook's own checks of every value
    return params
