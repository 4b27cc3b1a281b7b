"""``auth.locks``: issue 13 #8, the lock directory and lock files cannot be hijacked by another user."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from airflow_provider_iceprod.auth import locks
from airflow_provider_iceprod.auth.locks import LOCK_DIR_ENV, file_lock, lock_dir, lock_path

pytestmark = pytest.mark.skipif(locks.fcntl is None or not hasattr(os, "getuid"), reason="POSIX only")


@pytest.fixture(autouse=True)
def _forget_warnings() -> None:
    locks._warned.clear()


def test_a_private_directory_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))
    directory = lock_dir()
    assert directory == tmp_path / "locks"
    assert (directory.stat().st_mode & 0o777) == 0o700


def test_a_directory_open_to_others_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv(LOCK_DIR_ENV, str(shared))
    with caplog.at_level("WARNING", logger="airflow_provider_iceprod.auth.locks"):
        assert lock_dir() is None
        assert lock_path("x") is None
    assert "mode 0777, needs 0700" in caplog.text and "without the cross-process lock" in caplog.text


def test_a_symlinked_directory_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "link"))
    assert lock_dir() is None


def test_a_directory_of_another_user_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    if os.getuid() != 0:
        pytest.skip("needs root to create a directory owned by someone else")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)  # nobody
    monkeypatch.setenv(LOCK_DIR_ENV, str(theirs))
    with caplog.at_level("WARNING", logger="airflow_provider_iceprod.auth.locks"):
        assert lock_dir() is None
    assert "belongs to another user (uid 65534)" in caplog.text


def test_a_lock_file_symlink_is_never_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))
    path = lock_path("conn")
    assert path is not None
    target = tmp_path / "victim"
    path.symlink_to(target)
    with caplog.at_level("WARNING", logger="airflow_provider_iceprod.auth.locks"), file_lock(path):
        pass  # runs without the lock instead of opening (and creating) the target
    assert not target.exists()
    assert "cannot be opened safely" in caplog.text


def test_lock_files_are_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))
    path = lock_path("conn")
    assert path is not None
    with file_lock(path):
        assert (path.stat().st_mode & 0o777) == 0o600
