"""``json_chunks.aloads``: the same result and errors as ``json.loads``, in steps for a long object."""

from __future__ import annotations

import asyncio
import json

import pytest

from airflow_provider_iceprod.json_chunks import aloads

SAME_AS_JSON_LOADS = [
    "{}",
    " { } ",
    '{"a":1}',
    '{"a": {"b": [1, 2, {"c": null}]}, "a": 2 , "x": "y\\u00e9"}\n',  # duplicate key: the last wins
    '{"a\\"b": 1, "e": "\\ud83d\\ude00", "f": -1.5e3, "t": true, "n": NaN}',
    '{ "a" :\t1 ,\n "b"  :  2 , "c":3,"d" :\r\n[ ] }  ',  # every kind and amount of whitespace
    "[1, 2]",
    '"text"',
    "3",
    "null",
]
NOT_JSON = [
    '{"a":1,}',
    '{"a" 1}',
    "{a:1}",
    '{"a":1} x',
    '{"a":1',
    "",
    '{"a":1 "b":2}',
    '{"a": tru}',
    '{"a":}',
    "{,}",
]


@pytest.mark.parametrize("text", SAME_AS_JSON_LOADS)
@pytest.mark.parametrize("step", [1, 2, 500])
def test_same_values_as_json_loads(text: str, step: int) -> None:
    assert asyncio.run(aloads(text, step)) == json.loads(text)


@pytest.mark.parametrize("text", NOT_JSON)
def test_same_errors_as_json_loads(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        asyncio.run(aloads(text, 1))


def test_a_long_object_is_decoded_in_steps_and_the_loop_runs_between_them() -> None:
    rows = {f"d{i}": {"dataset": i, "status": "processing", "tags": [i, None]} for i in range(2000)}
    text = json.dumps(rows)

    async def main() -> tuple[dict, int]:
        passes = 0
        done = False

        async def count_passes() -> None:
            nonlocal passes
            while not done:
                passes += 1
                await asyncio.sleep(0)

        counter = asyncio.create_task(count_passes())
        await asyncio.sleep(0)
        before = passes
        result = await aloads(text, members_per_step=100)
        done = True
        await counter
        return result, passes - before

    result, passes = asyncio.run(main())
    assert result == rows
    assert passes >= 2000 // 100 - 1  # one pass of the loop for every 100 members, at least
