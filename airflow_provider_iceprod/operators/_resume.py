"""What makes a submit safe to retry: a deterministic marker and the task state store.

* :func:`submit_marker` derives a short key from ``(dag_id, run_id, task_id, map_index)``. The hook
  appends ``[airflow:<marker>]`` to the dataset description and looks the marker up before it
  submits, so every try of the same task instance finds the dataset an earlier try created. This
  works on every Airflow version.
* :class:`SubmitState` wraps ``context["task_state_store"]`` (Airflow 3.3+), which survives retries
  and clears: the submit request id and the dataset id are written the moment they exist, so a
  retry reattaches without listing datasets. On older Airflow it is a no-op and the marker does it.
"""

from __future__ import annotations

import hashlib
from typing import Any

from airflow_provider_iceprod.version_compat import AIRFLOW_V_3_3_PLUS

REQUEST_ID_KEY = "iceprod_submit_request_id"
DATASET_ID_KEY = "iceprod_dataset_id"
MARKER_LENGTH = 16


def submit_marker(dag_id: str, run_id: str, task_id: str, map_index: int | None) -> str:
    """16 hex characters, the same for every try of one task instance (and unique across them)."""
    index = -1 if map_index is None else int(map_index)
    raw = "\x1f".join((dag_id, run_id, task_id, str(index)))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:MARKER_LENGTH]


def marker_for_context(context: Any) -> str:
    ti = context["ti"]
    return submit_marker(ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", None))


class SubmitState:
    """Best-effort persistence of the submit request id and dataset id across tries.

    Reading or writing the store never fails the task: the marker lookup is the safety net, so a
    store problem is logged as a warning and the value treated as absent.
    """

    def __init__(self, context: Any, log: Any) -> None:
        self._log = log
        store = context.get("task_state_store") if AIRFLOW_V_3_3_PLUS else None
        self._store = store

    @property
    def available(self) -> bool:
        return self._store is not None

    def get(self, key: str) -> str | None:
        if self._store is None:
            return None
        try:
            value = self._store.get(key)
        except Exception as exc:
            self._log.warning("Could not read %r from the task state store: %s", key, exc)
            return None
        return value if isinstance(value, str) and value else None

    def set(self, key: str, value: str) -> None:
        if self._store is None:
            return
        try:
            self._store.set(key, value)
        except Exception as exc:
            self._log.warning("Could not write %r to the task state store: %s", key, exc)

    def delete(self, *keys: str) -> None:
        if self._store is None:
            return
        for key in keys:
            try:
                self._store.delete(key)
            except Exception as exc:
                self._log.warning("Could not delete %r from the task state store: %s", key, exc)
