"""What makes a submit safe to retry: a deterministic marker and the task state store.

* :func:`submit_marker` derives a short key from ``(dag_id, run_id, task_id, map_index)``. The hook
  appends ``[airflow:<marker>]`` to the dataset description and looks the marker up before it
  submits, so every try of the same task instance finds the dataset an earlier try created. This
  works on every Airflow version.
* :class:`SubmitState` wraps ``context["task_state_store"]`` (Airflow 3.3+), which survives retries
  and clears: the submit request id and the dataset id are written the moment they exist, so a
  retry reattaches without listing datasets. The time a submit is sent is written *before* it goes
  out (a failed write stops the submit), so a retry knows whether an earlier try may have sent one
  whose outcome it never learned. On older Airflow it is a no-op: the marker and IceProd's submit
  queue do it.
* :func:`reattach_from_state`, :func:`existing_problem` and :func:`supersede` are the pieces of
  the operator's ``on_existing_failed`` policy for a dataset an earlier try created.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from airflow_provider_iceprod.api import checks
from airflow_provider_iceprod.exceptions import (
    IceProdNotFoundError,
    IceProdPermissionError,
    IceProdTransientError,
)
from airflow_provider_iceprod.version_compat import AIRFLOW_V_3_3_PLUS

if TYPE_CHECKING:
    from airflow_provider_iceprod.hooks.iceprod import IceProdHook
    from airflow_provider_iceprod.models import DatasetProgress, SubmitResult

REQUEST_ID_KEY = "iceprod_submit_request_id"
SENT_AT_KEY = "iceprod_submit_sent_at"
DATASET_ID_KEY = "iceprod_dataset_id"
MARKER_LENGTH = 16
SUPERSEDED_TAG = "airflow-superseded"


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
        self._store = context.get("task_state_store") if AIRFLOW_V_3_3_PLUS else None
        self._read_failed = False

    @property
    def available(self) -> bool:
        """Whether there is a store (Airflow 3.3+) and every read from it so far worked (so an
        absent value really is absent)."""
        return self._store is not None and not self._read_failed

    def get_time(self, key: str) -> float | None:
        """A time stored by :meth:`set_time` (epoch seconds), or None."""
        value = self.get(key)
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    def set_time(self, key: str, when: float) -> None:
        """Store a time that a later try must see: a failed write raises (a transient error)."""
        if self._store is None:
            return
        try:
            self._store.set(key, repr(float(when)))
        except Exception as exc:
            raise IceProdTransientError(
                f"Could not write {key!r} to the task state store ({exc}); nothing was submitted."
            ) from exc

    def get(self, key: str) -> str | None:
        if self._store is None:
            return None
        try:
            value = self._store.get(key)
        except Exception as exc:
            self._read_failed = True
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


def reattach_from_state(hook: IceProdHook, state: SubmitState, log: Any) -> SubmitResult | None:
    """The dataset whose id an earlier try stored (Airflow 3.3+); None when there is none usable."""
    from airflow_provider_iceprod.models import SubmitResult

    dataset_id = state.get(DATASET_ID_KEY)
    if not dataset_id:
        return None
    try:
        dataset = hook.get_dataset(dataset_id)
    except (IceProdNotFoundError, IceProdPermissionError) as exc:
        log.warning(
            "The dataset %s stored by an earlier try cannot be read (%s); looking it up by marker.",
            dataset_id,
            exc,
        )
        state.delete(DATASET_ID_KEY)
        return None
    return SubmitResult(
        request_id=state.get(REQUEST_ID_KEY),
        dataset_id=dataset.dataset_id,
        dataset=dataset.dataset,
        url=hook.dataset_url(dataset.dataset_id),
        reattached=True,
    )


def existing_problem(
    progress: DatasetProgress, *, target_states: Collection[str], starts_suspended: bool
) -> str | None:
    """What is wrong with a dataset an earlier try created, or None when it can be kept.

    ``target_states``: statuses the task waits for (empty when it does not wait), which are fine.
    ``starts_suspended``: the submit asked for a suspended dataset, so ``suspended`` is fine.
    """
    status = progress.status
    if status in target_states:
        return None
    if status == "suspended" and starts_suspended:
        return None
    if status == "errors":
        return "in status 'errors'"
    if status == "suspended":
        return "suspended"
    if status == "processing" and progress.tasks_failed > 0 and progress.tasks_active == 0:
        return "stalled (failed tasks and nothing waiting, queued or processing)"
    return None


def supersede(hook: IceProdHook, dataset_id: str, marker: str, log: Any) -> None:
    """Retire a dataset's marker (``[airflow-superseded:<marker>]``) so lookups find only a new one."""
    dataset = hook.get_dataset(dataset_id)
    tag = checks.marker_tag(marker)
    if tag not in dataset.description:
        return
    hook.set_description(dataset_id, dataset.description.replace(tag, f"[{SUPERSEDED_TAG}:{marker}]"))
    log.info("Dataset %s is marked superseded in its description.", dataset.dataset)
