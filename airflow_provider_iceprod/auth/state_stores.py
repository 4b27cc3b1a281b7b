"""The overlay outside the Task SDK: the metadata DB (ORM), an owner-only file, and both layered.

See :mod:`airflow_provider_iceprod.auth.state` for which store a process uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_iceprod.auth.locks import file_lock, lock_path
from airflow_provider_iceprod.auth.state import (
    TokenStateStore,
    VariableKeyed,
    _in_thread,
    _redacted,
    parse_overlay,
)
from airflow_provider_iceprod.auth.tokens import TokenState

log = logging.getLogger(__name__)

STATE_DIR_ENV = "AIRFLOW_ICEPROD_STATE_DIR"
DESCRIPTION = "IceProd token state of connection {conn_id} (airflow-provider-iceprod)"


def _warn_unsaved(conn_id: str, where: str, exc: BaseException, state: TokenState) -> None:
    log.warning(
        "IceProd connection %r: could not save the rotated refresh token to %s (%s).",
        conn_id,
        where,
        _redacted(exc, state),
    )


class DbTokenStateStore(VariableKeyed):
    """The overlay Variable through Airflow's ORM, for processes with metadata-DB access.

    A save reads the stored state and writes in one transaction (row lock where the DB has them), so
    the overlay never goes backwards, also between hosts sharing the DB.
    """

    def read_raw(self) -> str | None:
        from airflow.models import Variable
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            row = session.scalar(select(Variable).where(Variable.key == self.key))
            return None if row is None else row.val

    def load(self) -> TokenState | None:
        return parse_overlay(self.read_raw, f"Variable {self.key} in the metadata DB")

    def _write(self, state: TokenState) -> None:
        from airflow.models import Variable
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            row = session.scalar(select(Variable).where(Variable.key == self.key).with_for_update())
            if row is None:
                description = DESCRIPTION.format(conn_id=self.conn_id)
                session.add(Variable(key=self.key, val=state.to_json(), description=description))
                return
            current = TokenState.from_json(row.val, where=f"Variable {self.key}")
            if current is None or state.supersedes(current):
                row.val = state.to_json()

    def save(self, state: TokenState) -> bool:
        try:
            self._write(state)
            return True
        except Exception as exc:
            _warn_unsaved(self.conn_id, f"Variable {self.key} in the metadata DB", exc, state)
            return False

    def clear(self) -> None:
        from airflow.models import Variable
        from airflow.utils.session import create_session
        from sqlalchemy import delete

        with create_session() as session:
            session.execute(delete(Variable).where(Variable.key == self.key))

    async def aload(self) -> TokenState | None:
        return await _in_thread(self.load)

    async def asave(self, state: TokenState) -> bool:
        return bool(await _in_thread(self.save, state))


def state_dir() -> Path | None:
    """``$AIRFLOW_ICEPROD_STATE_DIR``, else ``$XDG_STATE_HOME/airflow-iceprod`` (``~/.local/state``);
    None when set to ``off``. Created with mode 0700.
    """
    configured = os.environ.get(STATE_DIR_ENV, "").strip()
    if configured.lower() in ("off", "none", "0", "false"):
        return None
    if configured:
        path = Path(configured)
    else:
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        path = Path(base) / "airflow-iceprod"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError:
        return None
    return path


@dataclass
class FileTokenStateStore:
    """The overlay in an owner-only file (0600), written atomically under a per-file lock."""

    path: Path
    conn_id: str

    @classmethod
    def for_connection(cls, conn_id: str, issuer: str, client_id: str) -> FileTokenStateStore | None:
        """The file of one connection (its name is a hash: it reveals nothing), or None when disabled."""
        directory = state_dir()
        if directory is None:
            return None
        digest = hashlib.sha256(f"{conn_id}|{issuer}|{client_id}".encode()).hexdigest()[:32]
        return cls(directory / f"{digest}.json", conn_id)

    def _lock(self) -> Any:
        return file_lock(lock_path(f"state|{self.path}"))

    def _read(self) -> bytes | None:
        # bytes: a file that is not UTF-8 is a corrupt overlay (ignored with a warning, then
        # rewritten), not a UnicodeDecodeError out of a refresh
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def load(self) -> TokenState | None:
        return parse_overlay(self._read, f"file {self.path}", OSError)

    def save(self, state: TokenState) -> bool:
        try:
            with self._lock():
                current = TokenState.from_json(self._read())
                if current is not None and not state.supersedes(current):
                    return True
                fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tmp-", suffix=".json")
                try:
                    with os.fdopen(fd, "w", encoding="utf-8") as handle:  # mkstemp: mode 0600
                        handle.write(state.to_json())
                        handle.flush()
                        os.fsync(handle.fileno())
                    os.replace(tmp, self.path)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
            return True
        except OSError as exc:
            _warn_unsaved(self.conn_id, str(self.path), exc, state)
            return False

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def aload(self) -> TokenState | None:
        return self.load()  # a small local file: no thread needed

    async def asave(self, state: TokenState) -> bool:
        return bool(await _in_thread(self.save, state))


@dataclass
class LayeredTokenStateStore:
    """A shared store (Variable or DB) plus this host's file copy.

    ``load`` returns the newer of the two, so a damaged shared copy (UI-saved ``***``) is bridged by the
    local copy until the next rotation rewrites both. ``save`` succeeds when the shared store took it.
    """

    shared: TokenStateStore
    local: FileTokenStateStore

    @staticmethod
    def _newer(a: TokenState | None, b: TokenState | None) -> TokenState | None:
        if a is None or b is None:
            return a or b
        return b if b.supersedes(a) else a

    def _local(self) -> TokenState | None:
        try:
            return self.local.load()
        except Exception:  # the shared store is authoritative; the copy is a bonus
            return None

    def load(self) -> TokenState | None:
        return self._newer(self.shared.load(), self._local())

    async def aload(self) -> TokenState | None:
        return self._newer(await self.shared.aload(), self._local())

    def save(self, state: TokenState) -> bool:
        self.local.save(state)
        return self.shared.save(state)

    async def asave(self, state: TokenState) -> bool:
        await self.local.asave(state)
        return await self.shared.asave(state)

    def clear(self) -> None:
        self.local.clear()
        self.shared.clear()
