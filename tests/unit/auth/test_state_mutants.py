"""The token-state overlay's stores, found weak by `make mutation` (mutmut on auth/state.py and
auth/state_stores.py).

Which store a process uses, that a store never goes backwards, that a failed read is transient and a
failed write is retried then reported (without the token), that the file copy is owner-only and named
by a hash. The Task SDK side uses a stand-in for ``SUPERVISOR_COMMS`` answering with the real message
types (the real round trip through the Execution API is in ``test_state.py``); the DB store uses the
real metadata DB.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_iceprod.auth import state as state_module
from airflow_provider_iceprod.auth import state_stores
from airflow_provider_iceprod.auth.state import (
    MemoryTokenStateStore,
    VariableKeyed,
    VariableTokenStateStore,
    _redacted,
    default_state_store,
    in_server_context,
    in_task_context,
    parse_overlay,
    read_error,
)
from airflow_provider_iceprod.auth.state_stores import (
    DbTokenStateStore,
    FileTokenStateStore,
    LayeredTokenStateStore,
    state_dir,
)
from airflow_provider_iceprod.auth.tokens import TokenState
from airflow_provider_iceprod.exceptions import IceProdTransientError

ISSUER, CLIENT = "https://issuer.example/realms/x", "iceprod-public"


def _state(token: str = "refresh-token-gen-1", generation: int = 1, **changes: Any) -> TokenState:
    return TokenState(token, 1.0, ISSUER, CLIENT, "base", generation, 0.0, **changes)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AIRFLOW_ICEPROD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("_AIRFLOW_PROCESS_CONTEXT", raising=False)
    from airflow.sdk.execution_time import task_runner

    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", None, raising=False)
    yield


class Comms:
    """Answers GetVariable with one fixed message (the real comms message types)."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.sent: list[object] = []

    def send(self, msg: object) -> object:
        self.sent.append(msg)
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def _connect(monkeypatch: pytest.MonkeyPatch, answer: object) -> Comms:
    from airflow.sdk.execution_time import task_runner

    comms = Comms(answer)
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", comms, raising=False)
    return comms


def _variable(value: str | None) -> object:
    from airflow.sdk.execution_time.comms import VariableResult

    return VariableResult(key="k", value=value)


def _error(error: str, detail: object = None) -> object:
    from airflow.sdk.exceptions import ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse

    return ErrorResponse(error=ErrorType(error), detail=detail)


# -- helpers --------------------------------------------------------------------------------------


def test_an_error_text_for_the_log_hides_both_tokens_and_is_bounded() -> None:
    state = _state("REFRESH-abc", access_token="ACCESS-xyz")
    text = _redacted(RuntimeError("rejected REFRESH-abc and ACCESS-xyz"), state)
    assert text == "RuntimeError: rejected *** and ***"
    long = _redacted(ValueError("x" * 1000), _state())
    assert len(long) == 300 and long.startswith("ValueError: xxx")
    assert _redacted(OSError("plain"), _state(access_token="")) == "OSError: plain"


def test_a_failed_read_is_transient_and_says_where_and_what() -> None:
    error = read_error("Variable v", ConnectionError("secret detail"))
    assert isinstance(error, IceProdTransientError)
    assert str(error) == (
        "Could not read the IceProd token-state overlay (Variable v): ConnectionError. The newest "
        "refresh token may be stored there, so the refresh was not attempted with an older one; retry."
    )


def test_parse_overlay_turns_only_the_given_read_errors_into_transient_ones(caplog) -> None:
    def broken() -> str:
        raise OSError("disk")

    with pytest.raises(IceProdTransientError, match=r"\(file f\): OSError"):
        parse_overlay(broken, "file f", OSError)
    with pytest.raises(IceProdTransientError):
        parse_overlay(broken, "file f")  # default: any exception
    with pytest.raises(OSError):
        parse_overlay(broken, "file f", KeyError)
    assert parse_overlay(lambda: None, "w") is None
    assert parse_overlay(lambda: _state().to_json(), "w") == _state()
    with caplog.at_level(logging.WARNING):
        assert parse_overlay(lambda: '{"refresh_token": "***"}', "the place") is None
    assert "overlay in the place" in caplog.text


def test_stores_show_their_variable_not_their_tokens() -> None:
    assert repr(VariableKeyed("c1")) == "VariableKeyed(key='iceprod_token_state__c1')"
    store = VariableTokenStateStore("c2")
    assert (store.conn_id, store.key) == ("c2", "iceprod_token_state__c2")
    assert repr(store) == "VariableTokenStateStore(key='iceprod_token_state__c2')"


def test_the_process_context(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not in_task_context()
    _connect(monkeypatch, None)
    assert in_task_context()
    assert not in_server_context()
    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "client")
    assert not in_server_context()
    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")
    assert in_server_context()


def test_the_default_store_for_each_context(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    plain = default_state_store("c", ISSUER, CLIENT)
    assert isinstance(plain, FileTokenStateStore) and plain.path.parent == tmp_path / "state"
    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")
    server = default_state_store("c", ISSUER, CLIENT)
    assert isinstance(server, LayeredTokenStateStore)
    assert isinstance(server.shared, DbTokenStateStore) and server.shared.conn_id == "c"
    assert server.local == plain
    _connect(monkeypatch, None)  # a task in a server-context process still uses the Task SDK
    task = default_state_store("c", ISSUER, CLIENT)
    assert isinstance(task, LayeredTokenStateStore)
    assert isinstance(task.shared, VariableTokenStateStore) and task.shared.conn_id == "c"
    assert task.local == plain
    # without the file copy: the shared store alone
    monkeypatch.setenv("AIRFLOW_ICEPROD_STATE_DIR", "off")
    only_task = default_state_store("c", ISSUER, CLIENT)
    assert type(only_task) is VariableTokenStateStore and only_task.conn_id == "c"
    monkeypatch.setattr("airflow.sdk.execution_time.task_runner.SUPERVISOR_COMMS", None)
    only_db = default_state_store("c", ISSUER, CLIENT)
    assert type(only_db) is DbTokenStateStore and only_db.conn_id == "c"
    monkeypatch.delenv("_AIRFLOW_PROCESS_CONTEXT")
    nowhere = default_state_store("c", ISSUER, CLIENT)
    assert type(nowhere) is VariableTokenStateStore and nowhere.conn_id == "c"


def test_the_default_stores_file_copy_is_per_connection_issuer_and_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another connection, issuer or client never reads the rotated token of this one."""

    def copy(conn_id: str, issuer: str = ISSUER, client: str = CLIENT) -> FileTokenStateStore:
        store = default_state_store(conn_id, issuer, client)
        return store if isinstance(store, FileTokenStateStore) else store.local  # type: ignore[attr-defined]

    mine = copy("c")
    assert mine == FileTokenStateStore.for_connection("c", ISSUER, CLIENT)
    assert mine.save(_state()) is True
    assert copy("c").load() == _state()
    assert [
        other.load() for other in (copy("d"), copy("c", issuer=ISSUER + "2"), copy("c", client="other"))
    ] == [
        None,
        None,
        None,
    ]
    monkeypatch.setenv("_AIRFLOW_PROCESS_CONTEXT", "server")  # the layered store's copy: the same file
    assert copy("c") == mine and copy("d").load() is None


# -- the Variable through the Task SDK --------------------------------------------------------------


def test_reading_the_variable_asks_for_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk.execution_time.comms import GetVariable

    comms = _connect(monkeypatch, _variable(_state().to_json()))
    assert VariableTokenStateStore("c").load() == _state()
    assert comms.sent == [GetVariable(key="iceprod_token_state__c")]


def test_a_missing_or_empty_variable_is_no_overlay(monkeypatch: pytest.MonkeyPatch) -> None:
    assert VariableTokenStateStore("c").load() is None  # no Task SDK connection
    _connect(monkeypatch, _error("VARIABLE_NOT_FOUND"))
    assert VariableTokenStateStore("c").load() is None
    _connect(monkeypatch, _variable(None))
    assert VariableTokenStateStore("c")._read_raw() is None


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param("error", id="an error other than not found"),
        pytest.param("other", id="an unexpected answer"),
    ],
)
def test_a_failed_variable_read_is_transient(monkeypatch: pytest.MonkeyPatch, answer: str) -> None:
    from airflow.sdk.execution_time.comms import GetVariable

    message = _error("API_SERVER_ERROR", {"reason": "boom"}) if answer == "error" else GetVariable(key="k")
    _connect(monkeypatch, message)
    with pytest.raises(RuntimeError) as raised:
        VariableTokenStateStore("c")._read_raw()
    if answer == "error":
        assert "API_SERVER_ERROR" in str(raised.value) and str(raised.value).endswith(": {'reason': 'boom'}")
    else:
        assert str(raised.value) == "unexpected answer GetVariable"
    with pytest.raises(IceProdTransientError, match=r"\(Variable iceprod_token_state__c\): RuntimeError"):
        VariableTokenStateStore("c").load()


async def test_an_async_read_sees_the_same_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    _connect(monkeypatch, _variable(_state().to_json()))
    assert await VariableTokenStateStore("c").aload() == _state()


class _Variables:
    """Records Variable.set / Variable.delete (the Task SDK's write calls)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail: BaseException | None = None) -> None:
        import airflow.sdk

        self.sets: list[tuple[str, str, str | None]] = []
        self.fail = fail
        monkeypatch.setattr(airflow.sdk.Variable, "set", self._set)
        monkeypatch.setattr(airflow.sdk.Variable, "delete", self._delete)

    def _set(self, key: str, value: str, description: str | None = None, **_: object) -> None:
        if self.fail is not None:
            raise self.fail
        self.sets.append((key, value, description))

    def _delete(self, key: str) -> None:
        if self.fail is not None:
            raise self.fail


def test_a_variable_write_never_goes_backwards(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    variables = _Variables(monkeypatch)
    stored = _state("stored-token", 2)
    _connect(monkeypatch, _variable(stored.to_json()))
    store = VariableTokenStateStore("c")
    with caplog.at_level(logging.INFO, logger=state_module.__name__):
        assert store.save(_state("older-token", 1)) is True
    assert variables.sets == []
    assert caplog.messages == [
        "IceProd: the overlay Variable iceprod_token_state__c already holds a newer refresh token"
    ]
    assert store.save(stored) is True  # the same state again: written (a UI edit is repaired)
    assert store.save(_state("newer-token", 3)) is True
    description = "IceProd token state of connection c (airflow-provider-iceprod)"
    assert variables.sets == [
        ("iceprod_token_state__c", stored.to_json(), description),
        ("iceprod_token_state__c", _state("newer-token", 3).to_json(), description),
    ]


def test_a_variable_write_goes_ahead_when_the_stored_one_cannot_be_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    variables = _Variables(monkeypatch)
    _connect(monkeypatch, ConnectionError("api"))
    assert VariableTokenStateStore("c").save(_state()) is True
    assert [key for key, _, _ in variables.sets] == ["iceprod_token_state__c"]


def test_a_failed_variable_write_is_retried_then_reported_without_the_token(
    monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    _Variables(monkeypatch, fail=RuntimeError("refused refresh-token-gen-1"))
    sleeps: list[float] = []
    monkeypatch.setattr(state_module.time, "sleep", sleeps.append)
    with caplog.at_level(logging.WARNING, logger=state_module.__name__):
        assert VariableTokenStateStore("c").save(_state()) is False
    assert sleeps == [0.2, 0.4]  # three attempts
    assert caplog.messages == [
        "IceProd connection 'c': the issuer rotated the refresh token but it could not be saved to the "
        "Variable iceprod_token_state__c (RuntimeError: refused ***). It is kept in this process's memory "
        "only; if this process ends before the next refresh, run `airflow-iceprod login --conn-id c` or "
        "`airflow-iceprod refresh`."
    ]


def test_a_variable_write_that_succeeds_on_a_retry_is_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[TokenState] = []

    def flaky(state: TokenState) -> None:
        calls.append(state)
        if len(calls) == 1:
            raise RuntimeError("hiccup")

    store = VariableTokenStateStore("c")
    monkeypatch.setattr(store, "_write", flaky)
    sleeps: list[float] = []
    monkeypatch.setattr(state_module.time, "sleep", sleeps.append)
    assert store.save(_state()) is True
    assert (len(calls), sleeps) == (2, [0.2])


def test_without_an_airflow_api_the_write_gives_up_at_once(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    _Variables(monkeypatch, fail=ImportError("no Task SDK API here"))
    sleeps: list[float] = []
    monkeypatch.setattr(state_module.time, "sleep", sleeps.append)
    with caplog.at_level(logging.WARNING, logger=state_module.__name__):
        assert VariableTokenStateStore("c").save(_state()) is False
    assert sleeps == [] and len(caplog.records) == 1


async def test_an_async_variable_write_is_retried_the_same_way(
    monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    variables = _Variables(monkeypatch, fail=RuntimeError("down"))
    sleeps: list[float] = []

    async def no_sleep(delay: float) -> None:
        sleeps.append(delay)

    monkeypatch.setattr(state_module.asyncio, "sleep", no_sleep)
    with caplog.at_level(logging.WARNING, logger=state_module.__name__):
        assert await VariableTokenStateStore("c").asave(_state()) is False
    assert sleeps == [0.2, 0.4] and len(caplog.records) == 1
    variables.fail = None
    sleeps.clear()
    assert await VariableTokenStateStore("c").asave(_state()) is True
    assert sleeps == [] and len(variables.sets) == 1
    variables.fail = ImportError("no API")
    assert await VariableTokenStateStore("c").asave(_state()) is False
    assert sleeps == []


def test_a_failed_variable_delete_is_a_warning(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    _Variables(monkeypatch, fail=RuntimeError("secret detail"))
    with caplog.at_level(logging.WARNING, logger=state_module.__name__):
        VariableTokenStateStore("c").clear()
    assert caplog.messages == [
        "Could not delete the IceProd token-state Variable iceprod_token_state__c: RuntimeError"
    ]


async def test_the_memory_store_never_goes_backwards_and_counts_saves() -> None:
    store = MemoryTokenStateStore()
    assert store.load() is None and store.saves == 0
    assert store.save(_state("t2", 2)) is True
    assert store.save(_state("t1", 1)) is True
    assert store.load() == _state("t2", 2) and store.saves == 2
    assert await store.asave(_state("t3", 3)) is True
    assert await store.aload() == _state("t3", 3) and store.saves == 3
    store.clear()
    assert store.load() is None
    assert MemoryTokenStateStore(_state()).load() == _state()


# -- the metadata DB --------------------------------------------------------------------------------


def _db_row(key: str) -> tuple[str | None, str | None] | None:
    from airflow.models import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        row = session.scalar(select(Variable).where(Variable.key == key))
        return None if row is None else (row.val, row.description)


async def test_the_db_store_describes_its_variable_and_repairs_a_masked_one(airflow_db: Path, caplog) -> None:
    store = DbTokenStateStore("iceprod_db_mut")
    store.clear()
    assert await store.asave(_state("db-token-gen-1", 1)) is True
    row = _db_row(store.key)
    assert row == (
        _state("db-token-gen-1", 1).to_json(),
        "IceProd token state of connection iceprod_db_mut (airflow-provider-iceprod)",
    )
    assert await store.aload() == _state("db-token-gen-1", 1)
    # someone saved the Variable from the UI: "***" is no state, the next save rewrites it
    from airflow.models import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        session.scalar(select(Variable).where(Variable.key == store.key)).val = "***"
    where = "IceProd token-state overlay in Variable iceprod_token_state__iceprod_db_mut"
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert store.load() is None
    assert [m for m in caplog.messages if m.startswith("Ignoring")] == [
        f"Ignoring the {where} in the metadata DB: it is not valid JSON of the expected shape"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert store.save(_state("db-token-gen-0", 0)) is True  # the save names the Variable too
    assert [m for m in caplog.messages if m.startswith("Ignoring")] == [
        f"Ignoring the {where}: it is not valid JSON of the expected shape"
    ]
    assert store.load() == _state("db-token-gen-0", 0)
    assert store.save(_state("db-token-gen-5", 5)) is True
    assert store.load() == _state("db-token-gen-5", 5)
    store.clear()
    assert _db_row(store.key) is None


def test_a_failed_db_write_is_reported_without_the_token(
    airflow_db: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    import airflow.utils.session as session_module

    def broken() -> None:
        raise RuntimeError("cannot write db-token-gen-1")

    monkeypatch.setattr(session_module, "create_session", broken)
    with caplog.at_level(logging.WARNING, logger=state_stores.__name__):
        assert DbTokenStateStore("c").save(_state("db-token-gen-1")) is False
    assert caplog.messages == [
        "IceProd connection 'c': could not save the rotated refresh token to Variable "
        "iceprod_token_state__c in the metadata DB (RuntimeError: cannot write ***)."
    ]


# -- this host's file copy --------------------------------------------------------------------------


@pytest.mark.parametrize("off", ["off", "OFF", " none ", "0", "false"])
def test_the_state_dir_can_be_turned_off(monkeypatch: pytest.MonkeyPatch, off: str) -> None:
    monkeypatch.setenv("AIRFLOW_ICEPROD_STATE_DIR", off)
    assert state_dir() is None


def test_the_state_dir_is_configured_else_under_xdg_state_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AIRFLOW_ICEPROD_STATE_DIR", f" {tmp_path / 'a' / 'b'} ")
    assert state_dir() == tmp_path / "a" / "b"
    assert ((tmp_path / "a" / "b").stat().st_mode & 0o777) == 0o700
    monkeypatch.delenv("AIRFLOW_ICEPROD_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir() == tmp_path / "xdg" / "airflow-iceprod"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_dir() == tmp_path / "home" / ".local" / "state" / "airflow-iceprod"
    existing = tmp_path / "loose"
    existing.mkdir(mode=0o755)
    monkeypatch.setenv("AIRFLOW_ICEPROD_STATE_DIR", str(existing))
    assert state_dir() == existing and (existing.stat().st_mode & 0o777) == 0o700
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("AIRFLOW_ICEPROD_STATE_DIR", str(tmp_path / "file" / "sub"))
    assert state_dir() is None  # cannot be created: no file copy, no error


def test_the_file_is_named_by_a_hash_of_connection_issuer_and_client(tmp_path: Path) -> None:
    store = FileTokenStateStore.for_connection("c", ISSUER, CLIENT)
    digest = hashlib.sha256(f"c|{ISSUER}|{CLIENT}".encode()).hexdigest()[:32]
    assert store == FileTokenStateStore(tmp_path / "state" / f"{digest}.json", "c")


async def test_the_file_store_round_trip_and_failures(tmp_path: Path, caplog) -> None:
    store = FileTokenStateStore.for_connection("c", ISSUER, CLIENT)
    assert store is not None
    assert store.load() is None
    store.clear()  # nothing to delete: no error
    assert await store.asave(_state("file-token-gen-2", 2)) is True
    assert await store.aload() == _state("file-token-gen-2", 2)
    before = store.path.stat().st_mtime_ns
    assert store.save(_state("file-token-gen-1", 1)) is True  # older: kept as it is
    assert store.path.stat().st_mtime_ns == before and store.load() == _state("file-token-gen-2", 2)
    assert [p.name for p in store.path.parent.iterdir()] == [store.path.name]  # no temporary files
    store.clear()
    assert not store.path.exists()
    # a directory where the file should be: the read fails (transient), the write fails (warning)
    store.path.mkdir()
    with pytest.raises(IceProdTransientError, match=r"\(file .*\): IsADirectoryError"):
        store.load()
    with caplog.at_level(logging.WARNING, logger=state_stores.__name__):
        assert store.save(_state("file-token-gen-3", 3)) is False
    assert caplog.messages[-1].startswith(
        f"IceProd connection 'c': could not save the rotated refresh token to {store.path} ("
    )
    assert "(IsADirectoryError: " in caplog.messages[-1] and "file-token-gen-3" not in caplog.text
    assert sorted(p.name for p in store.path.parent.iterdir()) == [store.path.name]


def test_the_file_is_written_next_to_itself_not_in_the_temp_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The atomic replace works where the system's temp dir is unusable (or another filesystem)."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-temp-dir"))
    (tmp_path / "state").mkdir()
    store = FileTokenStateStore(tmp_path / "state" / "copy.json", "c")
    assert store.save(_state()) is True
    assert store.load() == _state()
    assert [p.name for p in store.path.parent.iterdir()] == ["copy.json"]


def test_a_file_save_waits_while_another_writer_holds_the_files_lock(tmp_path: Path) -> None:
    """Never backwards between processes on this host: a save reads and replaces under the lock."""
    import threading

    store = FileTokenStateStore(tmp_path / "copy.json", "c")
    other_writer = FileTokenStateStore(tmp_path / "copy.json", "c")
    saved: list[bool] = []
    with other_writer._lock():
        thread = threading.Thread(target=lambda: saved.append(store.save(_state())))
        thread.start()
        thread.join(0.5)
        assert thread.is_alive() and not store.path.exists()  # waiting for the lock
    thread.join(30)
    assert saved == [True] and store.load() == _state()


async def test_async_calls_work_without_asgiref(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Off the loop with asyncio's own threads where asgiref (Airflow's) cannot be imported."""
    import sys

    monkeypatch.setitem(sys.modules, "asgiref.sync", None)  # `from asgiref.sync import ...` fails
    store = FileTokenStateStore(tmp_path / "copy.json", "c")
    assert await store.asave(_state()) is True
    assert await LayeredTokenStateStore(MemoryTokenStateStore(), store).asave(_state("t2", 2)) is True
    assert store.load() == _state("t2", 2)


# -- shared store plus file copy --------------------------------------------------------------------


class _Broken(MemoryTokenStateStore):
    def load(self) -> TokenState | None:
        raise IceProdTransientError("unreadable")


async def test_the_layered_store_reads_the_newer_and_writes_both(tmp_path: Path) -> None:
    local = FileTokenStateStore(tmp_path / "copy.json", "c")
    shared = MemoryTokenStateStore()
    store = LayeredTokenStateStore(shared, local)
    assert store.load() is None
    local.save(_state("local-2", 2))
    assert store.load() == _state("local-2", 2)  # the shared one was lost (UI-saved "***")
    shared.state = _state("shared-3", 3)
    assert store.load() == _state("shared-3", 3)
    assert await store.aload() == _state("shared-3", 3)
    shared.state = _state("shared-1", 1)
    assert store.load() == _state("local-2", 2)
    assert await store.aload() == _state("local-2", 2)
    shared.state = None
    local.clear()
    assert store.save(_state("both-4", 4)) is True
    assert (shared.state, local.load()) == (_state("both-4", 4), _state("both-4", 4))
    assert await store.asave(_state("both-5", 5)) is True
    assert (shared.state, local.load()) == (_state("both-5", 5), _state("both-5", 5))
    store.clear()
    assert (shared.state, local.load()) == (None, None)


def test_the_layered_store_reports_the_shared_write_and_survives_a_bad_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = FileTokenStateStore(tmp_path / "copy.json", "c")
    local.path.mkdir()  # an unreadable copy is ignored
    shared = MemoryTokenStateStore(_state("shared-1", 1))
    assert LayeredTokenStateStore(shared, local).load() == _state("shared-1", 1)
    monkeypatch.setattr(shared, "save", lambda state: False)
    assert LayeredTokenStateStore(shared, local).save(_state("x", 2)) is False
    with pytest.raises(IceProdTransientError):
        LayeredTokenStateStore(_Broken(), FileTokenStateStore(tmp_path / "c2.json", "c")).load()
