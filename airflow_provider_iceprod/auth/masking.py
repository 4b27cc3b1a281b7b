"""Secret masking with a bounded footprint per connection.

Airflow's masker keeps every secret it was given and recompiles one regex over all of them on each
``add_mask``. A long-lived process (the triggerer) refreshing every few minutes would make that regex,
and the time to rebuild it, grow without end. So the tokens of each credential go through a
:class:`MaskRegistry`: it keeps the last :data:`KEEP_PER_CREDENTIAL` secrets of that credential in the
masker, removes older ones (spent refresh tokens, expired access tokens) and rebuilds the regex once
per refresh. Async callers run it in a worker thread, never on the event loop.

The registry edits the masker's ``patterns`` and ``replacer`` (the same two attributes
``add_mask`` and ``reset_masker`` use). If a future Airflow changes them, it falls back to the public
``mask_secret`` (correct, but unbounded again).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from typing import Any

log = logging.getLogger(__name__)

#: Secrets kept masked per credential: the current and the previous access and refresh tokens.
KEEP_PER_CREDENTIAL = 4


def _masker() -> Any:
    from airflow.sdk.log import _secrets_masker

    return _secrets_masker()


def _supervisor() -> Any:
    """The task supervisor's comms, which also masks (it writes the task's log); None elsewhere.

    Not in the triggerer: its trigger process redacts log lines itself, and its supervisor lives as
    long as the triggerer, so telling it every token would grow its masker without bound again.
    """
    if _in_triggerer():
        return None
    import sys

    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    return getattr(runner, "SUPERVISOR_COMMS", None)


def _mask_message(secret: str) -> Any:
    from airflow.sdk.execution_time.comms import MaskSecret

    return MaskSecret(value=secret, name=None)


def _in_triggerer() -> bool:
    import sys

    return "airflow.jobs.triggerer_job_runner" in sys.modules


class MaskRegistry:
    """The secrets of each credential that are in Airflow's masker, at most ``keep`` per credential."""

    def __init__(self, keep: int = KEEP_PER_CREDENTIAL) -> None:
        self.keep = keep
        self._live: dict[Hashable, OrderedDict[str, None]] = {}
        self._lock = threading.Lock()

    def size(self, key: Hashable) -> int:
        with self._lock:
            return len(self._live.get(key, ()))

    def register(self, key: Hashable, secrets: Iterable[str | None]) -> None:
        """Mask ``secrets`` for credential ``key`` and unmask its secrets beyond the newest ``keep``."""
        comms = _supervisor()
        for secret in self._register_here(key, secrets):
            try:
                if comms is not None:
                    comms.send(_mask_message(secret))
            except Exception:
                log.debug("Could not register a token with the supervisor's masker", exc_info=True)

    async def aregister(self, key: Hashable, secrets: Iterable[str | None]) -> None:
        """:meth:`register` with the regex rebuilt in a worker thread, never on the event loop."""
        added = await asyncio.to_thread(self._register_here, key, list(secrets))
        comms = _supervisor()
        for secret in added:
            try:
                if comms is not None:
                    await comms.asend(_mask_message(secret))
            except Exception:
                log.debug("Could not register a token with the supervisor's masker", exc_info=True)

    def _register_here(self, key: Hashable, secrets: Iterable[str | None]) -> list[str]:
        """Edit this process's masker; returns the secrets that were new."""
        new = [s for s in secrets if s]
        if not new:
            return []
        try:
            masker = _masker()
        except Exception:  # masking must never break authentication
            log.debug("No secret masker available", exc_info=True)
            return []
        with self._lock:
            live = self._live.setdefault(key, OrderedDict())
            added = [s for s in new if s not in live]
            for secret in new:
                live[secret] = None
                live.move_to_end(secret)
            evicted: list[str] = []
            while len(live) > self.keep:
                evicted.append(live.popitem(last=False)[0])
            still_live = {s for other in self._live.values() for s in other}
            evicted = [s for s in evicted if s not in still_live]
            if not self._edit(masker, added, evicted):
                for secret in added:
                    masker.add_mask(secret)
        return added

    @staticmethod
    def _patterns(masker: Any, secrets: Iterable[str]) -> set[str]:
        out: set[str] = set()
        min_length = getattr(masker, "min_length_to_mask", 5)
        for secret in secrets:
            for variant in masker._adaptations(secret):
                if variant and len(variant) >= min_length:
                    out.add(re.escape(variant))
        return out

    def _edit(self, masker: Any, added: list[str], evicted: list[str]) -> bool:
        """Add and remove patterns, then rebuild the regex once. False when the masker is not as known."""
        if not isinstance(getattr(masker, "patterns", None), set) or not hasattr(masker, "_adaptations"):
            return False
        if not added and not evicted:
            return True
        adding = self._patterns(masker, added)
        removing = self._patterns(masker, evicted) - adding
        masker.patterns -= removing
        masker.patterns |= adding
        masker.replacer = re.compile("|".join(masker.patterns)) if masker.patterns else None
        return True


#: The one registry of this process.
MASKS = MaskRegistry()
