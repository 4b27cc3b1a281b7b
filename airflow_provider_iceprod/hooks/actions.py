"""Submitting and ``/actions/*`` (status actions, materialization), the async twins alongside.

A base of :class:`~airflow_provider_iceprod.hooks.iceprod.IceProdHook` (import the hook from there);
each pair is one line over the drivers of :class:`~airflow_provider_iceprod.hooks.driver.HookDriver`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Unpack, cast

from airflow_provider_iceprod.api import calls, checks, flows, submit_flow
from airflow_provider_iceprod.api.checks import SubmitArgs, SubmitRequest
from airflow_provider_iceprod.hooks.driver import Factory, HookDriver, listed, one_call
from airflow_provider_iceprod.hooks.options import (
    JobSelection,
    OnProgress,
    SubmitCallbacks,
    SubmitDatasetArgs,
    SubmitOptions,
    TaskSelection,
)
from airflow_provider_iceprod.models import ActionRequest, Dataset, SubmitResult

Ref = str | int  # a 32-hex dataset id or a dataset number
_CALLBACKS = SubmitCallbacks.__optional_keys__


class ActionCalls(HookDriver):
    """Submit, materialize, wait for and run ``/actions/*`` requests (see ``IceProdHook``)."""

    # ----------------------------------------------------------------------------------------------
    # Submit
    # ----------------------------------------------------------------------------------------------

    def submit(self, request: SubmitRequest, **options: Unpack[SubmitOptions]) -> SubmitResult:
        """Submit a request checked by :func:`~airflow_provider_iceprod.api.checks.check_submit`
        (what operators do, so the config is validated once); see :meth:`submit_dataset`.

        ``options``: ``on_request``, ``on_progress``, ``resume_request_id`` (as for
        :meth:`submit_dataset`); ``fresh=True`` says no earlier try can have sent a submit with this
        marker (skips the check of IceProd's submit queue); ``sent_at`` is when an earlier try sent
        one, if known; ``on_send(epoch_seconds)`` runs just before the submit is sent (persist it
        there; raise to stop the submit)."""
        return self._run(lambda ctx: submit_flow.submit_dataset(request, ctx, **options))

    async def asubmit(self, request: SubmitRequest, **options: Unpack[SubmitOptions]) -> SubmitResult:
        return await self._arun(lambda ctx: submit_flow.submit_dataset(request, ctx, **options))

    def submit_dataset(self, config: Mapping[str, Any], **args: Unpack[SubmitDatasetArgs]) -> SubmitResult:
        """Submit a dataset; never creates a second dataset for the same marker.

        ``args`` are those of :func:`~airflow_provider_iceprod.api.checks.check_submit`
        (``description``, ``jobs_submitted``, ``group``, ``extra_submit_fields``, ``marker``,
        ``low_level``, ``materialize``, ``timeout``, ``reconcile_grace``), all checked first, the
        config client-side, and the callbacks below. ``[airflow:<marker>]`` is appended to the
        description (a random marker when none is given). If a dataset with that marker already
        exists it is returned (``reattached=True``). Otherwise ``POST /actions/submit`` (or, with
        ``low_level=True``, ``POST /datasets`` + ``PUT /config/{id}``); ``on_request(request_id)`` is
        called as soon as the request exists, then the request is polled until it has a dataset
        (``on_progress(request)`` at each poll). If the server may
        have acted but the answer was lost, the hook looks for the marker for ``reconcile_grace``
        seconds instead of re-sending, then fails with ``IceProdUncertainError`` (not retryable:
        a person must check) while IceProd still has a submit queued or processing.
        ``resume_request_id`` (a request id saved from ``on_request`` by an earlier try) is
        checked first. With a ``marker`` of your own (so a later run may reuse it), the hook
        first makes sure no earlier submit may still be queued: it waits for the marker while
        IceProd has submit requests queued or processing, up to ``reconcile_grace`` counted from
        ``sent_at`` (when an earlier run sent its submit, if you kept it: ``on_send(epoch_seconds)``
        is called just before the submit goes out).
        """
        request, options = _check_submit(config, args)
        return self.submit(request, **options)

    async def asubmit_dataset(
        self, config: Mapping[str, Any], **args: Unpack[SubmitDatasetArgs]
    ) -> SubmitResult:
        # The config validation (jsonschema) runs off the event loop.
        request, options = await asyncio.to_thread(_check_submit, config, args)
        return await self.asubmit(request, **options)

    def find_dataset_by_marker(self, marker: str) -> Dataset | None:
        """The caller's dataset whose description carries ``[airflow:<marker>]``, if any."""
        return self._run(lambda ctx: submit_flow.find_dataset_by_marker(marker))

    async def afind_dataset_by_marker(self, marker: str) -> Dataset | None:
        return await self._arun(lambda ctx: submit_flow.find_dataset_by_marker(marker))

    # ----------------------------------------------------------------------------------------------
    # /actions/*
    # ----------------------------------------------------------------------------------------------

    def get_action(self, name: str, request_id: str) -> ActionRequest:
        """One ``/actions/<name>/<request_id>`` record (404 once expired, ~1 day)."""
        return self._run(one_call(lambda: calls.get_action(name, request_id)))

    async def aget_action(self, name: str, request_id: str) -> ActionRequest:
        return await self._arun(one_call(lambda: calls.get_action(name, request_id)))

    def wait_for_action(
        self, name: str, request_id: str, *, timeout: float = 900.0, on_progress: OnProgress = None
    ) -> ActionRequest:
        """Poll until ``complete``; raises IceProdActionError on ``error`` (with IceProd's message)
        and IceProdActionTimeoutError after ``timeout`` seconds."""
        return self._run(
            lambda ctx: flows.wait_for_action(name, request_id, ctx, timeout=timeout, on_progress=on_progress)
        )

    async def await_action(
        self, name: str, request_id: str, *, timeout: float = 900.0, on_progress: OnProgress = None
    ) -> ActionRequest:
        """Async :meth:`wait_for_action`."""
        return await self._arun(
            lambda ctx: flows.wait_for_action(name, request_id, ctx, timeout=timeout, on_progress=on_progress)
        )

    def materialize(
        self, ref: Ref, *, num: int | None = None, wait: bool = True, timeout: float = 900.0
    ) -> ActionRequest:
        """Ask IceProd to create jobs and tasks now (``/actions/materialization``; deduplicated)."""
        return self._run(lambda ctx: flows.materialize(ref, ctx, num=num, wait=wait, timeout=timeout))

    async def amaterialize(
        self, ref: Ref, *, num: int | None = None, wait: bool = True, timeout: float = 900.0
    ) -> ActionRequest:
        return await self._arun(lambda ctx: flows.materialize(ref, ctx, num=num, wait=wait, timeout=timeout))

    # ----------------------------------------------------------------------------------------------
    # Dataset actions
    # ----------------------------------------------------------------------------------------------

    def suspend_dataset(self, ref: Ref, *, on_progress: OnProgress = None) -> ActionRequest:
        """Suspend the dataset, its jobs and tasks (``/actions/dataset_status`` suspend)."""
        return self._run(_status("dataset_status", ref, "suspend", on_progress=on_progress))

    async def asuspend_dataset(self, ref: Ref, *, on_progress: OnProgress = None) -> ActionRequest:
        return await self._arun(_status("dataset_status", ref, "suspend", on_progress=on_progress))

    def resume_dataset(self, ref: Ref, *, on_progress: OnProgress = None) -> ActionRequest:
        """Resume a suspended/errors dataset (``/actions/dataset_status`` reset; restarts running tasks)."""
        return self._run(_status("dataset_status", ref, "reset", on_progress=on_progress))

    async def aresume_dataset(self, ref: Ref, *, on_progress: OnProgress = None) -> ActionRequest:
        return await self._arun(_status("dataset_status", ref, "reset", on_progress=on_progress))

    def retry_failed_tasks(self, ref: Ref, *, on_progress: OnProgress = None) -> ActionRequest:
        """Reset the dataset's failed tasks (``/actions/task_status`` reset, ``initial_status=failed``)."""
        return self._run(
            _status("task_status", ref, "reset", initial_status="failed", on_progress=on_progress)
        )

    async def aretry_failed_tasks(self, ref: Ref, *, on_progress: OnProgress = None) -> ActionRequest:
        return await self._arun(
            _status("task_status", ref, "reset", initial_status="failed", on_progress=on_progress)
        )

    def hard_reset_dataset(self, ref: Ref, *, on_progress: OnProgress = None) -> ActionRequest:
        """Re-run everything, complete tasks included (``/actions/dataset_status`` hard_reset)."""
        return self._run(_status("dataset_status", ref, "hard_reset", on_progress=on_progress))

    async def ahard_reset_dataset(self, ref: Ref, *, on_progress: OnProgress = None) -> ActionRequest:
        return await self._arun(_status("dataset_status", ref, "hard_reset", on_progress=on_progress))

    def job_status_action(self, ref: Ref, action: str, **select: Unpack[JobSelection]) -> ActionRequest:
        """``/actions/job_status``: reset, hard_reset or suspend jobs (``select``: :class:`JobSelection`)."""
        return self._run(_status("job_status", ref, action, **select))

    async def ajob_status_action(
        self, ref: Ref, action: str, **select: Unpack[JobSelection]
    ) -> ActionRequest:
        return await self._arun(_status("job_status", ref, action, **select))

    def task_status_action(self, ref: Ref, action: str, **select: Unpack[TaskSelection]) -> ActionRequest:
        """``/actions/task_status``: reset, hard_reset or suspend tasks (``select``: :class:`TaskSelection`;
        one selector at most)."""
        return self._run(_status("task_status", ref, action, **select))

    async def atask_status_action(
        self, ref: Ref, action: str, **select: Unpack[TaskSelection]
    ) -> ActionRequest:
        return await self._arun(_status("task_status", ref, action, **select))


def _status(name: str, ref: Ref, action: str, **select: Unpack[TaskSelection]) -> Factory[ActionRequest]:
    """A factory of a status action (``/actions/dataset_status|job_status|task_status``); the ids
    are read here, once, before the flow starts."""
    select["job_ids"] = listed(select.get("job_ids"))
    select["task_ids"] = listed(select.get("task_ids"))
    return lambda ctx: flows.status_action(name, ref, action, ctx, **select)


def _check_submit(config: Mapping[str, Any], args: SubmitDatasetArgs) -> tuple[SubmitRequest, SubmitOptions]:
    """``submit_dataset``'s arguments: the checked request, and the options of ``submit``."""
    checked = cast(SubmitArgs, {k: v for k, v in args.items() if k not in _CALLBACKS})
    options = cast(SubmitOptions, {k: v for k, v in args.items() if k in _CALLBACKS})
    options["fresh"] = args.get("marker") is None  # a random marker: no earlier try can have used it
    return checks.check_submit(config, **checked), options
