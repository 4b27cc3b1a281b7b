"""Everything wrong with a submit is caught before any request: the stand-in sees none."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from operator_helpers import FAST_ARGS, TWO_TASKS, make_dag, run_dag, ti_states, xcoms

from airflow_provider_iceprod.exceptions import IceProdConfigError, IceProdDatasetConfigError
from airflow_provider_iceprod.operators._submit_args import parse_config
from airflow_provider_iceprod.operators.submit import IceProdSubmitDatasetOperator


def _op(**kwargs: object) -> IceProdSubmitDatasetOperator:
    args: dict[str, object] = {
        "task_id": "submit",
        "config": TWO_TASKS,
        "description": "validation",
        "jobs_submitted": 3,
        **FAST_ARGS,
    }
    args.update(kwargs)
    return IceProdSubmitDatasetOperator(**args)  # type: ignore[arg-type]


def _config(edit) -> dict:
    config = copy.deepcopy(TWO_TASKS)
    edit(config)
    return config


BAD_CONFIGS = {
    "no tasks": (lambda c: c.update(tasks=[]), "config['tasks']"),
    "empty trays": (lambda c: c["tasks"][0].update(trays=[]), "config['tasks'][0]['trays']"),
    "unknown module key": (
        lambda c: c["tasks"][0]["trays"][0]["modules"][0].update(bogus=1),
        "'bogus' was unexpected",
    ),
    "data in a tray": (lambda c: c["tasks"][0]["trays"][0].update(data=[]), "'data' was unexpected"),
    "duplicate task names": (lambda c: c["tasks"][1].update(name="generate"), "generate"),
    "depends on a missing task": (lambda c: c["tasks"][1].update(depends=["simulate"]), "simulate"),
    "task without trays": (lambda c: c["tasks"][0].pop("trays"), "trays"),
    "cpu as a string": (lambda c: c["tasks"][0].update(requirements={"cpu": "two"}), "cpu"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_configs_are_rejected_with_the_config_path(case: str) -> None:
    edit, expected = BAD_CONFIGS[case]
    with pytest.raises(IceProdDatasetConfigError) as err:
        _op(config=_config(edit)).prepare()
    assert expected in str(err.value)


def test_task_count_is_checked_against_tasks_per_job() -> None:
    with pytest.raises(IceProdDatasetConfigError, match="3"):
        _op(tasks_per_job=3).prepare()
    assert _op(tasks_per_job=2).prepare().config["tasks"][1]["name"] == "process"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"group": "physicists"}, "group"),
        ({"jobs_submitted": -1}, "jobs_submitted"),
        ({"jobs_submitted": "many"}, "jobs_submitted"),
        ({"jobs_submitted": True}, "jobs_submitted"),
        ({"description": "  "}, "description"),
        ({"priority": "high"}, "extra_submit_fields.priority"),
        ({"extra_submit_fields": {"jobs_submitted": 5}}, "extra_submit_fields"),
        ({"extra_submit_fields": {"debug": "yes"}}, "extra_submit_fields.debug"),
        ({"extra_submit_fields": {"status": "complete"}}, "extra_submit_fields.status"),
        ({"tasks_per_job": -1}, "tasks_per_job"),
    ],
)
def test_bad_arguments_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(IceProdConfigError) as err:
        _op(**kwargs).prepare()
    assert err.value.field == field


def test_rendered_values_are_normalised() -> None:
    request = _op(jobs_submitted="12", group=" simprod ", priority=1, start_suspended=True).prepare("k1")
    assert request.jobs_submitted == 12
    assert request.group == "simprod"
    assert request.extra == {"priority": 1.0, "status": "suspended"}
    assert request.description == "validation [airflow:k1]"  # the task instance's marker
    assert request.config["version"] == 3.2


def test_zero_jobs_is_accepted_without_a_wait() -> None:
    assert _op(jobs_submitted=0).prepare().jobs_submitted == 0
    assert _op(jobs_submitted="0").prepare().jobs_submitted == 0


def test_zero_jobs_with_a_wait_fails_when_the_dag_is_parsed() -> None:
    """A dataset without jobs never completes: IceProd suspends it (docs/iceprod-quirks.md, 10)."""
    with pytest.raises(IceProdConfigError, match="jobs_submitted=0 with wait_for_completion=True") as err:
        _op(jobs_submitted=0, wait_for_completion=True)
    assert err.value.field == "jobs_submitted"
    assert "add_jobs" in str(err.value) and "IceProdDatasetSensor" in str(err.value)


def test_templated_zero_jobs_with_a_wait_fails_before_any_request(iceprod_connection, airflow_db) -> None:
    ip = iceprod_connection
    with make_dag("val_zero_jobs_wait", retries=2, params={"n": 0}) as dag:
        _op(jobs_submitted="{{ params.n }}", wait_for_completion=True)
    dag_run = run_dag(dag)

    assert ti_states(dag_run)[("submit", -1)] == "failed"  # a config error is final: no retries
    assert ip.counters.total() == 0
    assert ip.dataset_count() == 0


def test_bad_wait_options_fail_when_the_dag_is_parsed() -> None:
    with pytest.raises(IceProdConfigError, match="on_suspended"):
        _op(wait_for_completion=True, on_suspended="ignore")
    with pytest.raises(IceProdConfigError, match="on_existing_failed"):
        _op(on_existing_failed="retry")


def test_parse_config_accepts_json_and_yaml_text() -> None:
    assert parse_config(json.dumps(TWO_TASKS)) == TWO_TASKS
    assert parse_config("version: 3.2\ntasks: []\n") == {"version": 3.2, "tasks": []}
    with pytest.raises(IceProdDatasetConfigError, match="object"):
        parse_config("- just\n- a list\n")
    with pytest.raises(IceProdDatasetConfigError, match="neither valid JSON nor valid YAML"):
        parse_config("tasks: [unclosed")
    with pytest.raises(IceProdDatasetConfigError, match="empty"):
        parse_config("  ")


def test_bad_config_fails_the_task_before_any_request(iceprod_connection, airflow_db) -> None:
    ip = iceprod_connection
    bad = _config(lambda c: c["tasks"][1].update(depends=["simulate"]))
    with make_dag("val_bad_config", retries=2) as dag:
        _op(config=bad, wait_for_completion=True)
    dag_run = run_dag(dag)

    assert ti_states(dag_run)[("submit", -1)] == "failed"  # no retries: a config error is final
    assert ip.counters.total() == 0
    assert ip.dataset_count() == 0


def test_templated_config_file_and_dry_run_send_nothing(
    iceprod_connection, airflow_db, tmp_path: Path
) -> None:
    ip = iceprod_connection
    (tmp_path / "sim.yaml").write_text(
        "version: 3.2\n"
        "tasks:\n"
        "  - name: generate\n"
        "    trays: [{modules: [{src: /usr/bin/python3,\n"
        '                        args: "-c \'print(\\"{{ params.word }} $(job)\\")\'"}]}]\n'
    )
    with make_dag("val_dry_run", template_searchpath=[str(tmp_path)], params={"word": "hello"}) as dag:
        _op(
            config="sim.yaml",
            description="{{ params.word }} dataset",
            jobs_submitted="{{ 2 + 3 }}",
            dry_run=True,
        )
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "success"
    rendered = xcoms(dag_run, "submit")["return_value"]
    args = rendered["tasks"][0]["trays"][0]["modules"][0]["args"]
    assert args == "-c 'print(\"hello $(job)\")'"  # Jinja rendered, IceProd's macro left alone
    assert ip.counters.total() == 0
    assert ip.dataset_count() == 0


def test_templated_json_file_is_submitted(iceprod_connection, airflow_db, tmp_path: Path) -> None:
    ip = iceprod_connection
    (tmp_path / "sim.json").write_text(json.dumps(TWO_TASKS).replace("print(2)", "print({{ params.n }})"))
    with make_dag("val_json_file", template_searchpath=[str(tmp_path)], params={"n": 7}) as dag:
        _op(config="sim.json", jobs_submitted=1)
    dag_run = run_dag(dag)

    assert str(dag_run.state) == "success"
    [dataset] = ip.datasets()
    stored = ip.config(dataset["dataset_id"])
    assert stored is not None
    assert stored["tasks"][1]["trays"][0]["modules"][0]["args"] == "-c 'print(7)'"


def test_large_jobs_submitted_needs_allow_large_at_parse_time() -> None:
    """Issue 13 #9: a literal count is checked when the DAG is parsed, with the execute rule."""
    with pytest.raises(IceProdConfigError, match="allow_large=True") as err:
        _op(jobs_submitted=10**12)
    assert err.value.field == "jobs_submitted"
    assert _op(jobs_submitted=10**12, allow_large=True).prepare().jobs_submitted == 10**12
    _op(jobs_submitted="{{ params.jobs }}")  # a template: checked at execute


def test_negative_priority_passes_at_parse_time_and_at_execute() -> None:
    """Issue 13 #9: IceProd accepts negative priorities, so both checks do."""
    assert _op(priority=-2).prepare().extra == {"priority": -2.0}
