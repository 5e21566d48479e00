"""Telling a running PostgreSQL server from a pid file left by a crash: a pid that another program took after a
restart must never be signalled (the clean-up of an upgrade cut short would otherwise stop, or wait 30 s for, an
unrelated program of the user's)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from oscbridge.store.postmaster import ask_to_stop, postmaster_pid, stop_and_wait
from oscbridge.store.upgrade import recover, work_area


@pytest.fixture
def other_program() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not PostgreSQL."""
    program = subprocess.Popen(["sleep", "60"])
    yield program
    program.kill()
    program.wait()


def stale_pid_file(datadir: Path, pid: int) -> None:
    """postmaster.pid as PostgreSQL writes it: pid, data dir, start time, port, socket dir, ..."""
    datadir.mkdir(parents=True)
    (datadir / "postmaster.pid").write_text(f"{pid}\n{datadir}\n1700000000\n5432\n/tmp\nlocalhost\n")


def test_a_pid_file_naming_another_program_is_not_believed(tmp_path: Path,
                                                            other_program: subprocess.Popen[bytes]) -> None:
    stale_pid_file(tmp_path / "data", other_program.pid)
    assert postmaster_pid(tmp_path / "data") is None
    assert ask_to_stop(tmp_path / "data") is None
    assert stop_and_wait(tmp_path / "data", 1.0)
    assert other_program.poll() is None  # never signalled
    other_program.kill()
    other_program.wait()
    assert postmaster_pid(tmp_path / "data") is None  # a pid no process has
    assert postmaster_pid(tmp_path / "nothing") is None


def test_the_work_area_of_an_upgrade_cut_short_is_removed_without_touching_a_program_that_took_its_pid(
        tmp_path: Path, other_program: subprocess.Popen[bytes]) -> None:
    pgdata = tmp_path / "postgres"
    stale_pid_file(work_area(pgdata) / "new", other_program.pid)
    recover(pgdata)
    assert not work_area(pgdata).exists()
    assert other_program.poll() is None
