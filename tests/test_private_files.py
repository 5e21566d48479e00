"""Private by default: under the usual umask 022 the data dir, spool, log and recording are 0700/0600, what an
older install left wider is tightened, the doctor says when they are open to others, and `db url` hides the
password."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from oscbridge.client import BridgeClient
from oscbridge.config import Settings
from oscbridge.tools import doctor
from tests.conftest import free_port, run_cli


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


async def answering(port: int, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    """Waits until the daemon answers /bridge/ping (its log goes to a file, not to stderr)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        assert proc.poll() is None, f"the daemon exited: {proc.communicate()[1][-2000:]}"
        try:
            async with await BridgeClient.connect("127.0.0.1", port) as client:
                await client.call("/bridge/ping", timeout=0.5)
                return
        except TimeoutError:
            assert asyncio.get_running_loop().time() < deadline, "the daemon did not answer"


async def test_files_are_private_under_umask_022(tmp_path: Path, database_url: str, umask_022: None) -> None:
    data = tmp_path / "data"
    spool = data / "spool"
    spool.mkdir(parents=True, mode=0o755)  # as an older install left them
    data.chmod(0o755)
    (spool / "writes.jsonl").write_text("")
    (spool / "rejected.jsonl").write_text("")
    logs = tmp_path / "logs"
    log_file = logs / "oscbridge.log"
    record = tmp_path / "session.jsonl"
    logs.mkdir(mode=0o755)
    (logs / "oscbridge.log.1").write_text("an older rotation\n")
    for path in (spool / "writes.jsonl", spool / "rejected.jsonl", logs / "oscbridge.log.1"):
        assert mode(path) == 0o644
    settings = Settings(host="127.0.0.1", osc_port=free_port(), data_dir=data, database_url=database_url,
                        log_file=log_file)

    report = doctor.privacy_check(settings, "linux")
    assert report.status == "warn" and report.fix is not None
    assert f"chmod 700 {data} {spool}" in report.fix
    assert f"chmod 600 {spool / 'writes.jsonl'} {spool / 'rejected.jsonl'} {logs / 'oscbridge.log.1'}" in report.fix

    proc = subprocess.Popen(
        [sys.executable, "-m", "oscbridge", "serve", "--osc-port", str(settings.osc_port), "--data-dir", str(data),
         "--database-url", database_url, "--log-file", str(log_file), "--record", str(record)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        await answering(settings.osc_port, proc)
        async with await BridgeClient.connect("127.0.0.1", settings.osc_port) as client:
            await client.call("/bridge/debug/log", "test", "", "log", "a private line", "", "info")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, proc.communicate()[1][-2000:]

    assert {p.name: mode(p) for p in (data, spool)} == {"data": 0o700, "spool": 0o700}
    files = [spool / n for n in ("writes.jsonl", "writes.offset", "rejected.jsonl", "lock")]
    files += [log_file, logs / "oscbridge.log.1", record]
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    assert "a private line" in record.read_text()
    assert log_file.stat().st_size > 0
    assert mode(logs) == 0o755  # a log dir that existed is the user's choice: only its files are made private
    assert doctor.privacy_check(settings, "linux").status == "ok"

    data.chmod(0o755)
    report = doctor.privacy_check(settings, "linux")
    assert report.status == "warn" and str(data) in report.message and report.fix == f"run `chmod 700 {data}` " \
        "(the bridge also tightens them at its next start)"


def test_new_dirs_are_created_private_under_umask_022(tmp_path: Path, umask_022: None) -> None:
    from oscbridge.logs import configure_logging
    from oscbridge.private import private_dir
    from oscbridge.store.spool import Spool

    made = private_dir(tmp_path / "a" / "b")
    assert mode(tmp_path / "a") == mode(made) == 0o700
    spool = Spool(tmp_path / "fresh" / "spool", max_bytes=1 << 20, reserve_bytes=0)
    spool.append({"k": "x", "d": {}})
    spool.close()
    assert mode(tmp_path / "fresh") == mode(tmp_path / "fresh" / "spool") == 0o700
    log_file = tmp_path / "new-logs" / "oscbridge.log"
    try:
        configure_logging("warning", log_file)
    finally:
        configure_logging("warning")  # as tests/conftest.py set it
    assert mode(log_file.parent) == 0o700 and mode(log_file) == 0o600


def test_db_url_hides_the_password_unless_asked(tmp_path: Path) -> None:
    url = "postgresql://bridge:s3cret-pw@db.example:5432/oscbridge?sslmode=require"
    env = {**os.environ, "HOME": str(tmp_path)}
    hidden = run_cli("db", "url", "--database-url", url, env=env)
    assert hidden.returncode == 0
    assert hidden.stdout.strip() == "postgresql://bridge:***@db.example:5432/oscbridge?sslmode=require"
    assert "s3cret" not in hidden.stdout + hidden.stderr and "--show-password" in hidden.stderr
    shown = run_cli("db", "url", "--database-url", url, "--show-password", env=env)
    assert shown.returncode == 0 and shown.stdout.strip() == url


@contextmanager
def umask(value: int) -> Iterator[None]:
    """The process's umask for a block (set inside a test, after pytest made tmp_path)."""
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o277])
def test_a_private_file_is_0600_whatever_the_umask(tmp_path: Path, mask: int) -> None:
    from oscbridge.private import write_private_file

    fresh, wide = tmp_path / "fresh", tmp_path / "wide"
    wide.write_text("old")
    wide.chmod(0o644)
    with umask(mask):
        write_private_file(fresh, b"new\n")
        write_private_file(wide, b"replaced\n")
    assert (fresh.read_bytes(), mode(fresh)) == (b"new\n", 0o600)
    assert (wide.read_bytes(), mode(wide)) == (b"replaced\n", 0o600)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "wide"]  # no temporary file left


def test_a_private_file_is_replaced_whole_never_rewritten_in_place(tmp_path: Path) -> None:
    from oscbridge.private import write_private_file

    path = tmp_path / "bridge.json"
    old = b"o" * 100_000
    write_private_file(path, old)
    before = path.stat().st_ino
    with open(path, "rb") as reader:  # a reader that opened the file before the write
        write_private_file(path, b"new")
        assert reader.read() == old  # still sees the whole old content: the new one is another file
    assert path.read_bytes() == b"new" and path.stat().st_ino != before
    # A write that fails part way (here: data that is not bytes) leaves the file as it was, and no temporary file.
    with pytest.raises(TypeError):
        write_private_file(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["bridge.json"]


def test_identity_token_and_passfile_are_written_0600_whatever_the_umask(tmp_path: Path) -> None:
    """The three private files the bridge and `db init` write go through the one helper: under a umask that takes
    the owner's write bit too (0277), `open(..., opener=private_opener)` left them 0400."""
    import json

    from oscbridge.store.identity import load_identity
    from oscbridge.tools.db import write_passfile
    from oscbridge.web.token import load_or_create_token, read_token, token_path

    passfile = tmp_path / "pgpass"
    with umask(0o277):
        identity = load_identity(tmp_path, "Rig")
        token = load_or_create_token(tmp_path)
        write_passfile(passfile, "localhost", 5432, "oscbridge", {"bridge": "pw"})
    assert json.loads((tmp_path / "bridge.json").read_text()) == {"id": identity.id, "name": "Rig"}
    assert read_token(tmp_path) == token
    assert passfile.read_text() == "localhost:5432:oscbridge:bridge:pw\n"
    files = [tmp_path / "bridge.json", token_path(tmp_path), passfile]
    assert {p.name: mode(p) for p in files} == {p.name: 0o600 for p in files}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in files)
