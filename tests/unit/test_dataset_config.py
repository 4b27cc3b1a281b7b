"""Client-side IceProd v3.2 dataset-config validation: defaults, schema rules, wording, strict checks."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections import OrderedDict
from datetime import datetime
from types import MappingProxyType
from typing import Any

import pytest

from airflow_provider_iceprod.dataset_config import (
    fill_defaults,
    load_schema,
    task_names,
    validate_config,
)
from airflow_provider_iceprod.exceptions import IceProdConfigError, IceProdDatasetConfigError

# The two configs of the reference (section 9), accepted by a real IceProd 3.2.
MINIMAL: dict[str, Any] = {
    "version": 3.2,
    "tasks": [{"name": "testing", "trays": [{"modules": [{"src": "/usr/bin/python3", "args": ""}]}]}],
}
TWO_TASKS: dict[str, Any] = {
    "version": 3.2,
    "description": "airflow test",
    "tasks": [
        {
            "name": "generate",
            "requirements": {"cpu": 1, "memory": 2.0},
            "trays": [{"modules": [{"src": "/usr/bin/python3", "args": '-c "print(1)"'}]}],
        },
        {
            "name": "process",
            "depends": ["generate"],
            "trays": [{"modules": [{"src": "/usr/bin/python3", "args": '-c "print(2)"'}]}],
        },
    ],
}


def config_with(**task_fields: Any) -> dict[str, Any]:
    """The minimal config with its one task's fields replaced (``None`` deletes a field)."""
    config = copy.deepcopy(MINIMAL)
    for key, value in task_fields.items():
        if value is None:
            config["tasks"][0].pop(key, None)
        else:
            config["tasks"][0][key] = value
    return config


def module_config(**module: Any) -> dict[str, Any]:
    return config_with(trays=[{"modules": [module]}])


def error_of(config: Any, **kwargs: Any) -> IceProdDatasetConfigError:
    with pytest.raises(IceProdDatasetConfigError) as info:
        validate_config(config, **kwargs)
    return info.value


# ------------------------------------------------------------------------------------------------
# accepted configs and defaults
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [MINIMAL, TWO_TASKS], ids=["minimal", "two_tasks"])
def test_reference_examples_validate(config: dict[str, Any]) -> None:
    before = copy.deepcopy(config)
    result = validate_config(config, strict=True, tasks_per_job=len(config["tasks"]))
    assert config == before, "the input must not be changed"
    assert result == fill_defaults(config)
    assert result["version"] == 3.2


def test_minimal_config_needs_default_filling() -> None:
    """A plain schema check rejects the minimal config: 'description' only exists after filling."""
    from jsonschema import Draft202012Validator

    raw_errors = [e.message for e in Draft202012Validator(load_schema()).iter_errors(MINIMAL)]
    assert raw_errors == ["'description' is a required property"]
    assert validate_config(MINIMAL)["description"] == "Test Dataset"


def test_fill_defaults_matches_iceprod() -> None:
    filled = fill_defaults(TWO_TASKS)
    assert filled["description"] == "airflow test"  # present values are kept
    assert filled["options"] == {}
    assert filled["steering"] == {"parameters": {}, "batchsys": {}, "data": []}
    generate, process = filled["tasks"]
    assert generate["requirements"] == {"cpu": 1, "memory": 2.0, "disk": 1.0, "time": 1.0, "os": []}
    # like IceProd, requirements defaults go only into an existing requirements object
    assert "requirements" not in process
    for task in (generate, process):
        assert task["data"] == []
        assert task["parameters"] == {}
        assert task["batchsys"] == {}
        assert task["container"] == ""
        assert task["token_scopes"] == {}
        assert task["task_files"] is False
        tray = task["trays"][0]
        assert (tray["name"], tray["iterations"], tray["parameters"]) == ("", 1, {})
        module = tray["modules"][0]
        assert module["env_clear"] is True
        assert module["src"] == "/usr/bin/python3"
        for key, value in {
            "name": "",
            "env_shell": "",
            "configs": {},
            "parameters": {},
            "running_class": "",
        }.items():
            assert module[key] == value
    assert process["depends"] == ["generate"]
    assert "depends" not in generate  # no default for depends
    assert "gpu" not in generate["requirements"] and "site" not in generate["requirements"]


def test_fill_defaults_adds_version_and_fills_data_items() -> None:
    config = {
        "tasks": [
            {
                "name": "a",
                "data": [{"remote": "gsiftp://x/y"}, {"type": "job_temp", "local": "tmp.i3"}],
                "trays": [{"modules": [{}]}],
            }
        ],
        "steering": {"data": [{"remote": "osdf:///icecube/wipac/f"}]},
    }
    filled = fill_defaults(config)
    assert filled["version"] == 3.2
    permanent, temp = filled["tasks"][0]["data"]
    assert permanent == {
        "remote": "gsiftp://x/y",
        "local": "",
        "type": "permanent",
        "movement": "input",
        "transfer": True,
    }
    assert temp["remote"] == "" and temp["type"] == "job_temp" and temp["local"] == "tmp.i3"
    assert filled["steering"]["data"][0]["movement"] == "input"
    assert filled["steering"]["parameters"] == {}


def test_fill_defaults_gives_every_object_its_own_default_instance() -> None:
    filled = fill_defaults(TWO_TASKS)
    first, second = filled["tasks"]
    assert first["parameters"] is not second["parameters"]
    first["parameters"]["x"] = 1
    assert second["parameters"] == {}
    assert fill_defaults(TWO_TASKS)["tasks"][0]["parameters"] == {}


def test_macros_are_never_expanded() -> None:
    config = config_with(
        requirements={"memory": "$eval($args(mem) * 2)", "time": "$(jobs_submitted)"},
        parameters={"seed": "$(job)", "out": "$steering(base)/$(dataset)"},
    )
    result = validate_config(config)
    assert result["tasks"][0]["requirements"]["memory"] == "$eval($args(mem) * 2)"
    assert result["tasks"][0]["requirements"]["time"] == "$(jobs_submitted)"
    assert result["tasks"][0]["parameters"] == {"seed": "$(job)", "out": "$steering(base)/$(dataset)"}


def test_other_keys_are_allowed_where_iceprod_allows_them() -> None:
    config = copy.deepcopy(MINIMAL)
    config["my_top_level_note"] = {"anything": [1, 2]}
    config["options"] = {"free": "form"}
    config["tasks"][0]["my_task_note"] = "kept"
    config["tasks"][0]["requirements"] = {"cpu": 2, "gpu": 1, "os": ["RHEL_9_x86_64"], "site": "WIPAC"}
    config["tasks"][0]["token_scopes"] = {"osdf:///icecube/wipac": "storage.read:/data"}
    config["tasks"][0]["trays"][0]["modules"][0]["args"] = {"flag": True}
    result = validate_config(config)
    assert result["my_top_level_note"] == {"anything": [1, 2]}
    assert result["tasks"][0]["my_task_note"] == "kept"
    assert validate_config(module_config(args=["-c", "print(1)"]))


def test_module_args_may_be_list_or_object() -> None:
    for args in ("", ["-v"], {"k": 1}):
        assert (
            validate_config(module_config(src="x", args=args))["tasks"][0]["trays"][0]["modules"][0]["args"]
            == args
        )


def test_mapping_and_tuple_input_is_copied_as_json() -> None:
    task = MappingProxyType({"name": "t", "trays": [{"modules": ({},)}]})
    config = OrderedDict(version=3.2, tasks=(task,))
    result = validate_config(config)
    assert type(result) is dict and type(result["tasks"][0]) is dict
    assert isinstance(result["tasks"], list) and isinstance(result["tasks"][0]["trays"][0]["modules"], list)


# ------------------------------------------------------------------------------------------------
# wording
# ------------------------------------------------------------------------------------------------


def test_verified_message_empty_trays() -> None:
    error = error_of(config_with(trays=[]))
    assert str(error) == "Validation error in config['tasks'][0]['trays']: [] should be non-empty"
    assert error.field == "config['tasks'][0]['trays']"
    assert isinstance(error, IceProdConfigError)


def test_verified_message_unknown_module_key() -> None:
    error = error_of(module_config(src="x", bogus=1))
    assert str(error) == (
        "Validation error in config['tasks'][0]['trays'][0]['modules'][0]: "
        "Additional properties are not allowed ('bogus' was unexpected)"
    )
    assert error.field == "config['tasks'][0]['trays'][0]['modules'][0]"


def test_first_error_is_stable_and_shallowest() -> None:
    config = copy.deepcopy(TWO_TASKS)
    config["tasks"][1]["trays"] = []
    config["tasks"][0]["trays"][0]["modules"][0]["bogus"] = 1
    config["tasks"][0]["requirements"]["cpu"] = "many"
    messages = {str(error_of(config)) for _ in range(3)}
    assert messages == {"Validation error in config['tasks'][1]['trays']: [] should be non-empty"}


# ------------------------------------------------------------------------------------------------
# schema rules
# ------------------------------------------------------------------------------------------------

BAD_TASK_FIELDS = [
    ({"requirements": {"cpu": "2"}}, "['requirements']['cpu']", "'2' is not of type 'integer'"),
    ({"requirements": {"cpu": 1.5}}, "['requirements']['cpu']", "1.5 is not of type 'integer'"),
    ({"requirements": {"gpu": True}}, "['requirements']['gpu']", "True is not of type 'integer'"),
    (
        {"requirements": {"memory": [2]}},
        "['requirements']['memory']",
        "[2] is not valid under any of the given schemas",
    ),
    (
        {"requirements": {"disk": None}},
        "['requirements']['disk']",
        "None is not valid under any of the given schemas",
    ),
    (
        {"requirements": {"time": {"h": 1}}},
        "['requirements']['time']",
        "{'h': 1} is not valid under any of the given schemas",
    ),
    ({"requirements": {"os": "RHEL_9"}}, "['requirements']['os']", "'RHEL_9' is not of type 'array'"),
    ({"requirements": {"os": [9]}}, "['requirements']['os'][0]", "9 is not of type 'string'"),
    ({"requirements": {"site": 1}}, "['requirements']['site']", "1 is not of type 'string'"),
    ({"requirements": "big"}, "['requirements']", "'big' is not of type 'object'"),
    ({"token_scopes": {"osdf:///x": 1}}, "['token_scopes']['osdf:///x']", "1 is not of type 'string'"),
    ({"token_scopes": "all"}, "['token_scopes']", "'all' is not of type 'object'"),
    ({"task_files": "yes"}, "['task_files']", "'yes' is not of type 'boolean'"),
    ({"container": 7}, "['container']", "7 is not of type 'string'"),
    ({"name": 7}, "['name']", "7 is not of type 'string'"),
    ({"depends": "generate"}, "['depends']", "'generate' is not of type 'array'"),
    ({"depends": [0]}, "['depends'][0]", "0 is not of type 'string'"),
    ({"parameters": []}, "['parameters']", "[] is not of type 'object'"),
    ({"batchsys": {"condor": "x"}}, "['batchsys']['condor']", "'x' is not of type 'object'"),
    ({"data": {}}, "['data']", "{} is not of type 'array'"),
    (
        {"data": [{"type": "temp", "local": "abc"}]},
        "['data'][0]['type']",
        "'temp' is not one of ['permanent', 'job_temp', 'dataset_temp', 'site_temp']",
    ),
    (
        {"data": [{"remote": "gsiftp://a/b", "movement": "in"}]},
        "['data'][0]['movement']",
        "'in' is not one of ['input', 'output', 'both']",
    ),
    (
        {"data": [{"remote": "gsiftp://a/b", "transfer": "sometimes"}]},
        "['data'][0]['transfer']",
        "'sometimes' is not one of [True, False, 'maybe', 'yes', 'no', 'y', 'n', '1', '0', 1, 0]",
    ),
    ({"data": [{"type": "permanent"}]}, "['data'][0]['remote']", "'' is too short"),
    (
        {"data": [{"type": "dataset_temp"}]},
        "['data'][0]['local']",
        "local is required when type is temporary",
    ),
    (
        {"data": [{"type": "site_temp", "local": "f.i3", "remote": "gsiftp://a/b"}]},
        "['data'][0]['remote']",
        "remote should be empty when type is temporary",
    ),
    ({"task_files": True}, "['token_scopes']", "token_scopes are required when task_files=true"),
    ({"trays": None}, "", "'trays' is a required property"),
    ({"name": None}, "", "'name' is a required property"),
    ({"trays": {}}, "['trays']", "{} is not of type 'array'"),
    ({"trays": [{}]}, "['trays'][0]", "'modules' is a required property"),
    ({"trays": [{"modules": []}]}, "['trays'][0]['modules']", "[] should be non-empty"),
    (
        {"trays": [{"modules": [{}], "iterations": "2"}]},
        "['trays'][0]['iterations']",
        "'2' is not of type 'integer'",
    ),
    ({"trays": [{"modules": [{}], "name": 1}]}, "['trays'][0]['name']", "1 is not of type 'string'"),
    (
        {"trays": [{"modules": [{}], "data": []}]},
        "['trays'][0]",
        "Additional properties are not allowed ('data' was unexpected)",
    ),
    (
        {"trays": [{"modules": [{}], "bogus": 1}]},
        "['trays'][0]",
        "Additional properties are not allowed ('bogus' was unexpected)",
    ),
]
BAD_MODULES = [
    ({"args": 5}, "['args']", "5 is not valid under any of the given schemas"),
    # best_match picks the list branch's error; the path is the full one (IceProd would print config[1])
    ({"args": ["-v", 1]}, "['args'][1]", "1 is not of type 'string'"),
    ({"src": ["/bin/true"]}, "['src']", "['/bin/true'] is not of type 'string'"),
    ({"env_clear": "no"}, "['env_clear']", "'no' is not of type 'boolean'"),
    ({"env_shell": False}, "['env_shell']", "False is not of type 'string'"),
    ({"configs": "a.json"}, "['configs']", "'a.json' is not of type 'object'"),
    ({"running_class": 1}, "['running_class']", "1 is not of type 'string'"),
    ({"data": []}, "", "Additional properties are not allowed ('data' was unexpected)"),
    ({"requirements": {}}, "", "Additional properties are not allowed ('requirements' was unexpected)"),
]


@pytest.mark.parametrize(("fields", "subpath", "message"), BAD_TASK_FIELDS)
def test_bad_task_fields(fields: dict[str, Any], subpath: str, message: str) -> None:
    error = error_of(config_with(**fields))
    field = f"config['tasks'][0]{subpath}"
    assert (error.field, str(error)) == (field, f"Validation error in {field}: {message}")


@pytest.mark.parametrize(("module", "subpath", "message"), BAD_MODULES)
def test_bad_modules(module: dict[str, Any], subpath: str, message: str) -> None:
    error = error_of(module_config(**module))
    field = f"config['tasks'][0]['trays'][0]['modules'][0]{subpath}"
    assert str(error) == f"Validation error in {field}: {message}"
    assert error.field == field


@pytest.mark.parametrize(
    ("top", "field", "message"),
    [
        ({"tasks": None}, "config", "'tasks' is a required property"),
        ({"tasks": {"name": "a"}}, "config['tasks']", "{'name': 'a'} is not of type 'array'"),
        ({"tasks": ["a"]}, "config['tasks'][0]", "'a' is not of type 'object'"),
        ({"description": 5}, "config['description']", "5 is not of type 'string'"),
        ({"options": []}, "config['options']", "[] is not of type 'object'"),
        ({"steering": []}, "config['steering']", "[] is not of type 'object'"),
        (
            {"steering": {"bogus": 1}},
            "config['steering']",
            "Additional properties are not allowed ('bogus' was unexpected)",
        ),
        ({"steering": {"parameters": 1}}, "config['steering']['parameters']", "1 is not of type 'object'"),
        (
            {"steering": {"data": [{"movement": "output"}]}},
            "config['steering']['data'][0]['remote']",
            "'' is too short",
        ),
    ],
)
def test_bad_top_level(top: dict[str, Any], field: str, message: str) -> None:
    config = copy.deepcopy(MINIMAL)
    for key, value in top.items():
        if value is None:
            del config[key]
        else:
            config[key] = value
    error = error_of(config)
    assert (error.field, str(error)) == (field, f"Validation error in {field}: {message}")


@pytest.mark.parametrize("transfer", [True, False, "maybe", "yes", "n", "1", 1, 0])
def test_data_transfer_values(transfer: Any) -> None:
    config = config_with(data=[{"remote": "gsiftp://a/b", "movement": "both", "transfer": transfer}])
    assert validate_config(config)["tasks"][0]["data"][0]["transfer"] == transfer


def test_temporary_data_is_accepted() -> None:
    data = [{"type": kind, "local": "file.i3", "movement": "output"} for kind in ("job_temp", "site_temp")]
    assert validate_config(config_with(data=data))["tasks"][0]["data"][1]["remote"] == ""


def test_task_files_with_token_scopes_is_accepted() -> None:
    config = config_with(task_files=True, token_scopes={"osdf:///icecube/wipac": "storage.read:/data/sim"})
    assert validate_config(config)["tasks"][0]["task_files"] is True
    error = error_of(config_with(task_files=True, token_scopes={"osdf:///icecube/wipac": "short"}))
    assert str(error) == (
        "Validation error in config['tasks'][0]['token_scopes']['osdf:///icecube/wipac']: "
        "'short' is too short"
    )


# ------------------------------------------------------------------------------------------------
# version and input type
# ------------------------------------------------------------------------------------------------


def test_missing_version_is_rejected_unless_forced() -> None:
    config = copy.deepcopy(MINIMAL)
    del config["version"]
    error = error_of(config)
    assert error.field == "config['version']"
    assert "v3.1" in str(error) and '"version": 3.2' in str(error)
    assert validate_config(config, force_version=True)["version"] == 3.2


@pytest.mark.parametrize("version", [3.1, 3, "3.1", "latest", True, None, [3.2]])
def test_other_versions_are_rejected(version: Any) -> None:
    error = error_of({**MINIMAL, "version": version})
    assert str(error) == (
        "Validation error in config['version']: "
        f"only dataset config version 3.2 is supported, got {version!r}"
    )
    assert error.field == "config['version']"


def test_force_version_overrides_like_submit() -> None:
    result = validate_config({**MINIMAL, "version": 3.1}, force_version=True)
    assert result["version"] == 3.2


def test_version_string_is_normalised() -> None:
    result = validate_config({**MINIMAL, "version": "3.2"})
    assert result["version"] == 3.2 and isinstance(result["version"], float)
    assert validate_config({**MINIMAL, "version": 3.20})["version"] == 3.2


@pytest.mark.parametrize("config", [[MINIMAL], "{}", None, 3.2])
def test_not_a_dict(config: Any) -> None:
    error = error_of(config)
    assert str(error).startswith("config is not valid")
    assert error.field == "config"


def test_not_json_serializable() -> None:
    error = error_of(config_with(parameters={"when": datetime(2026, 1, 1)}))
    assert str(error) == "config is not valid: Object of type datetime is not JSON serializable"
    with pytest.raises(IceProdDatasetConfigError, match="config is not valid"):
        fill_defaults([1, 2])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# strict checks
# ------------------------------------------------------------------------------------------------


def two_tasks(**second: Any) -> dict[str, Any]:
    config = copy.deepcopy(TWO_TASKS)
    config["tasks"][1].update(second)
    return config


def test_duplicate_names_only_fail_in_strict_mode() -> None:
    config = two_tasks(name="generate", depends=[])
    assert validate_config(config)  # IceProd itself accepts this
    error = error_of(config, strict=True)
    assert error.field == "config['tasks'][1]['name']"
    assert str(error) == (
        "Validation error in config['tasks'][1]['name']: duplicate task name 'generate' "
        "(also used by config['tasks'][0])"
    )


@pytest.mark.parametrize(
    ("depends", "message"),
    [
        (["gen"], "'gen' is not the name of a task in this config (tasks: 'generate', 'process')"),
        (["process"], "'process' is this task itself; a task cannot depend on itself"),
        (
            ["0626d580aa6a11ef9b1102fc00000001"],
            "'0626d580aa6a11ef9b1102fc00000001' is not the name of a task",
        ),
        ([":generate"], "':generate' is not the name of a task"),
    ],
)
def test_bad_depends_in_strict_mode(depends: list[str], message: str) -> None:
    config = two_tasks(depends=depends)
    assert validate_config(config)  # not checked by IceProd at submit time
    error = error_of(config, strict=True)
    assert error.field == "config['tasks'][1]['depends'][0]"
    assert str(error).startswith(f"Validation error in config['tasks'][1]['depends'][0]: {message}")


def test_depends_on_a_later_task_fails_in_strict_mode() -> None:
    config = copy.deepcopy(TWO_TASKS)
    config["tasks"][0]["depends"] = ["process"]
    del config["tasks"][1]["depends"]
    error = error_of(config, strict=True)
    assert str(error) == (
        "Validation error in config['tasks'][0]['depends'][0]: 'process' is a later task "
        "(config['tasks'][1]); IceProd only allows dependencies on earlier tasks"
    )


def test_second_depends_entry_is_named_by_position() -> None:
    error = error_of(two_tasks(depends=["generate", "nope"]), strict=True)
    assert error.field == "config['tasks'][1]['depends'][1]"


def test_cross_dataset_depends_is_allowed_in_strict_mode() -> None:
    config = two_tasks(depends=["generate", "0626d580aa6a11ef9b1102fc00000001:generate"])
    assert validate_config(config, strict=True)["tasks"][1]["depends"][1].endswith(":generate")


def test_tasks_per_job_mismatch() -> None:
    assert validate_config(TWO_TASKS, tasks_per_job=3)  # only checked in strict mode
    error = error_of(TWO_TASKS, strict=True, tasks_per_job=3)
    assert error.field == "config['tasks']"
    assert (
        str(error) == "Validation error in config['tasks']: the config has 2 task(s) but tasks_per_job is 3"
    )
    assert validate_config(TWO_TASKS, strict=True, tasks_per_job=2)


def test_schema_errors_come_before_strict_errors() -> None:
    config = two_tasks(name="generate", trays=[])
    assert str(error_of(config, strict=True)).endswith("['trays']: [] should be non-empty")


# ------------------------------------------------------------------------------------------------
# helpers, schema file, import cost
# ------------------------------------------------------------------------------------------------


def test_task_names() -> None:
    assert task_names(TWO_TASKS) == ["generate", "process"]
    assert task_names(fill_defaults(MINIMAL)) == ["testing"]
    assert task_names({"tasks": [{"trays": []}, "junk", {"name": "x"}]}) == ["", "", "x"]
    assert task_names({}) == []


def test_schema_is_valid_2020_12_and_packaged() -> None:
    from jsonschema import Draft202012Validator

    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert load_schema() is schema  # cached
    assert json.dumps(schema)


def test_module_import_does_not_import_jsonschema() -> None:
    """Airflow itself may load jsonschema; block it and import the module fresh."""
    code = (
        "import sys\n"
        "import airflow_provider_iceprod.exceptions\n"
        "for name in [m for m in sys.modules if m == 'jsonschema' or m.startswith('jsonschema.')]:\n"
        "    del sys.modules[name]\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'jsonschema' or name.startswith('jsonschema.'):\n"
        "            raise ImportError('jsonschema imported at module import')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import airflow_provider_iceprod.dataset_config as dc\n"
        "assert dc.task_names({'tasks': [{'name': 'a'}]}) == ['a']\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"
