"""Scenarios: each takes a side and returns what it saw, normalized. Same code for both sides."""

from __future__ import annotations

import json
from typing import Any

from sides import Side, normalize


def config(*tasks: dict[str, Any], version: float | None = 3.2) -> dict[str, Any]:
    cfg: dict[str, Any] = {"tasks": list(tasks)}
    if version is not None:
        cfg["version"] = version
    return cfg


def task(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "trays": [{"modules": [{"src": f"{name}.py"}]}], **extra}


def submit(
    side: Side, cfg: dict[str, Any], jobs: int = 1, *, who: str = "alice", **extra: Any
) -> dict[str, Any]:
    body = {
        "config": json.dumps(cfg),
        "description": extra.pop("description", "fidelity"),
        "jobs_submitted": jobs,
    }
    body.update(extra)
    return side.action_done("submit", body, who=who)


class Record:
    """What a scenario observed, step by step."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, Any]] = []

    def add(self, label: str, value: Any) -> Any:
        self.steps.append((label, normalize(value)))
        return value

    def state(self, side: Side, label: str = "state") -> list[dict[str, Any]]:
        side.settle()
        return self.add(label, side.snapshot())
