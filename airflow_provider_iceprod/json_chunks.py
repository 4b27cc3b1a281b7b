"""Decode a large JSON object a few hundred members at a time, yielding to the event loop between.

IceProd answers ``GET /datasets`` with one JSON object keyed by dataset id, and has no paging: for
10,000 waited-on datasets the shared poller's answer is about 2 MB, and ``json.loads`` of it holds
the event loop for about 20 ms in one piece. :func:`aloads` gives the same result as
``json.loads`` (the same values, the same last-wins duplicate keys, the same errors), but decodes
a top-level object member by member with the C scanner and yields every :data:`MEMBERS_PER_STEP`
members. Any other JSON value is decoded in one piece.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

#: Members decoded between two yields (IceProd's dataset rows: about 1 ms per 500).
MEMBERS_PER_STEP = 500

_WHITESPACE = re.compile(r"[ \t\n\r]*")
# json's own (C) scanners, which json.loads uses too (not in typeshed's stubs):
_scan_value = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # (value, end) at an index
_scan_string = json.decoder.scanstring  # type: ignore[attr-defined]  # (string, end) after a quote


def _skip(text: str, index: int) -> int:
    char = text[index : index + 1]
    if char == " ":  # json.dumps' (and so tornado's) ", " and ": " separators
        index += 1
        char = text[index : index + 1]
    if char and char not in " \t\n\r":
        return index
    match = _WHITESPACE.match(text, index)
    return match.end() if match else index


def _value(text: str, index: int) -> tuple[Any, int]:
    try:
        return _scan_value(text, index)  # type: ignore[no-any-return]
    except StopIteration as stop:
        raise json.JSONDecodeError("Expecting value", text, stop.value) from None


def _expect(text: str, index: int, char: str, what: str) -> int:
    if not text.startswith(char, index):
        raise json.JSONDecodeError(f"Expecting {what}", text, index)
    return index + 1


async def aloads(text: str, members_per_step: int = MEMBERS_PER_STEP) -> Any:
    """``json.loads(text)``, yielding to the event loop every ``members_per_step`` object members."""
    index = _skip(text, 0)
    if not text.startswith("{", index):
        return json.loads(text)
    result: dict[str, Any] = {}
    index = _skip(text, index + 1)
    if text.startswith("}", index):
        index += 1
    else:
        count = 0
        while True:
            if not text.startswith('"', index):
                raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, index)
            key, index = _scan_string(text, index + 1)
            index = _expect(text, _skip(text, index), ":", "':' delimiter")
            value, index = _value(text, _skip(text, index))
            result[key] = value
            count += 1
            if count % members_per_step == 0:
                await asyncio.sleep(0)
            index = _skip(text, index)
            if text.startswith("}", index):
                index += 1
                break
            index = _skip(text, _expect(text, index, ",", "',' delimiter"))
    if _skip(text, index) != len(text):
        raise json.JSONDecodeError("Extra data", text, _skip(text, index))
    return result
