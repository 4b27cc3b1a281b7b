"""``hook_params``: one dict of hook arguments, checked when the DAG is parsed, the same for
operators, the sensor and the trigger, and turned into exactly one hook per task."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_iceprod.exceptions import IceProdConfigError
from airflow_provider_iceprod.hook_params import check_hook_params, hook_param_names, plain_hook_params
from airflow_provider_iceprod.operators.actions import IceProdDatasetActionOperator
from airflow_provider_iceprod.operators.submit import IceProdSubmitDatasetOperator
from airflow_provider_iceprod.sensors.dataset import IceProdDatasetSensor
from airflow_provider_iceprod.triggers.dataset import IceProdDatasetTrigger

CONFIG = {"version": 3.2, "tasks": [{"name": "t", "trays": [{"modules": [{"src": "x.py"}]}]}]}
PARAMS = {"retry_limit": 2, "retry_delay": 0.5, "max_delay": 9, "timeout": 7, "poll_interval": 0.25}


def _submit(**kw: Any) -> Any:
    return IceProdSubmitDatasetOperator(task_id="s", config=CONFIG, description="d", **kw)


def _action(**kw: Any) -> Any:
    return IceProdDatasetActionOperator(task_id="a", action="suspend", dataset=12, **kw)


def _sensor(**kw: Any) -> Any:
    return IceProdDatasetSensor(task_id="w", dataset=12, **kw)


def _trigger(**kw: Any) -> Any:
    return IceProdDatasetTrigger("0123456789abcdef0123456789abcdef", **kw)


BUILDERS: dict[str, Callable[..., Any]] = {
    "submit": _submit,
    "action": _action,
    "sensor": _sensor,
    "trigger": _trigger,
}


def test_the_keys_are_the_hooks_keyword_arguments() -> None:
    assert hook_param_names() == (
        "retry_limit",
        "retry_delay",
        "max_delay",
        "retry_after_cap",
        "timeout",
        "poll_interval",
    )


def test_a_checked_copy_is_returned_unchanged() -> None:
    assert plain_hook_params({"timeout": 5}) == {"timeout": 5}
    assert check_hook_params(None) == {}
    assert check_hook_params({}) == {}
    checked = check_hook_params(PARAMS)
    assert checked == PARAMS
    assert checked is not PARAMS


NOT_PLAIN = [
    ([("retry_limit", 3)], "must be a dict"),
    ({"timeout": "30"}, r"hook_params\['timeout'\] must be a plain number"),
    ({"poll_interval": True}, "plain number"),
    ({"iceprod_conn_id": "other"}, "plain number"),
]
REFUSED_BY_THE_HOOK = [
    ({"retry_limt": 3}, r"unknown key\(s\) \['retry_limt'\]; IceProdHook takes \["),
    ({"retry_limit": -1}, "retry_limit"),
    ({"retry_limit": 1.5}, "retry_limit"),
    ({"timeout": 0}, "timeout"),
    ({"poll_interval": -1}, "poll_interval"),
]


@pytest.mark.parametrize("build", BUILDERS.values(), ids=BUILDERS.keys())
@pytest.mark.parametrize(("hook_params", "match"), NOT_PLAIN)
def test_hook_params_that_are_not_plain_numbers_fail_when_built(
    build: Callable[..., Any], hook_params: Any, match: str
) -> None:
    with pytest.raises(IceProdConfigError, match=match):
        build(hook_params=hook_params)


@pytest.mark.parametrize("build", [_submit, _action, _sensor], ids=["submit", "action", "sensor"])
@pytest.mark.parametrize(("hook_params", "match"), REFUSED_BY_THE_HOOK)
def test_hook_params_the_hook_refuses_fail_when_the_dag_is_parsed(
    build: Callable[..., Any], hook_params: Any, match: str
) -> None:
    with pytest.raises(IceProdConfigError, match=match):
        build(hook_params=hook_params)


@pytest.mark.parametrize(("hook_params", "match"), REFUSED_BY_THE_HOOK)
async def test_a_trigger_with_hook_params_the_hook_refuses_ends_with_one_error_event(
    hook_params: Any, match: str
) -> None:
    """Its __init__ runs on the triggerer's loop, so the hook checks them in run(); no request is sent."""
    trigger = _trigger(hook_params=hook_params)
    events = [event.payload async for event in trigger.run()]
    assert [(e["status"], e["error_type"]) for e in events] == [("error", "IceProdConfigError")]
    assert re.search(match, events[0]["message"])


@pytest.mark.parametrize("build", [_submit, _action, _sensor], ids=["submit", "action", "sensor"])
def test_one_hook_per_task_built_from_hook_params(build: Callable[..., Any]) -> None:
    task = build(iceprod_conn_id="iceprod_other", hook_params=PARAMS)
    hook = task.hook
    assert task.hook is hook  # built once
    assert hook.iceprod_conn_id == "iceprod_other"
    assert hook.poll_interval == 0.25
    assert (hook.retry_settings.retry_limit, hook.retry_settings.retry_delay) == (2, 0.5)
    assert (hook.retry_settings.max_delay, hook.retry_settings.timeout) == (9.0, 7.0)
    default = build().hook
    assert (default.iceprod_conn_id, default.retry_settings.retry_limit) == ("iceprod_default", 5)


def test_trigger_kwargs_carry_hook_params_unchanged() -> None:
    _, kwargs = _trigger(hook_params=PARAMS).serialize()
    assert kwargs["hook_params"] == PARAMS
    assert _trigger().serialize()[1]["hook_params"] == {}


def test_building_tasks_without_hook_params_does_not_import_the_hook() -> None:
    """A DAG file that does not tune the hook never pays for importing it (httpx, tenacity, ...),
    and building a trigger never imports it (that runs on the triggerer's event loop)."""
    code = (
        "import sys, json\n"
        "from airflow_provider_iceprod.operators.submit import IceProdSubmitDatasetOperator\n"
        "from airflow_provider_iceprod.operators.actions import IceProdDatasetActionOperator\n"
        "IceProdSubmitDatasetOperator(task_id='s', config={}, description='d', hook_params={})\n"
        "IceProdDatasetActionOperator(task_id='a', action='suspend', dataset=1)\n"
        "from airflow_provider_iceprod.triggers.dataset import IceProdDatasetTrigger\n"
        "IceProdDatasetTrigger('0' * 32, hook_params={'timeout': 5, 'retry_limit': 1})\n"
        "before = 'airflow_provider_iceprod.hooks.iceprod' in sys.modules\n"
        "IceProdDatasetActionOperator(task_id='b', action='suspend', dataset=1, hook_params={'timeout': 5})\n"
        "print(json.dumps([before, 'airflow_provider_iceprod.hooks.iceprod' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [False, True]
