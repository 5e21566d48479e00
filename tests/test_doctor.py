"""`oscbridge doctor` against real setups: a running bridge on the test PostgreSQL, the fake Ollama, sockets that
hold the port, and launchctl through the recording stand-in of tests/test_launchd.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from oscbridge import __version__
from oscbridge.config import Settings
from oscbridge.redact import redact_url
from oscbridge.store.embedded import EmbeddedPostgres
from oscbridge.store.schema import latest_version
from oscbridge.store.sizes import Sizes, TableSize
from oscbridge.tools import doctor
from oscbridge.tools.doctor import Check, Report
from oscbridge.tools.fake_ollama import FakeOllama
from tests.conftest import free_port, make_settings, run_cli, running
from tests.test_launchd import CRASHED, NOT_FOUND, RUNNING, RecordingLaunchctl, Result

NAMES = ["database", "pgvector", "schema", "storage", "ollama", "osc_port", "web", "disk", "spool", "privacy",
         "backups", "launchd"]
SECRET = "Sup3r-s3cret"
SCHEMA_VERSION = latest_version()


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


def agent(answer: Result | None = None) -> RecordingLaunchctl:
    """launchctl that answers `print` with `answer` (by default: the agent is running as pid 4242)."""
    return RecordingLaunchctl({"print": [answer or Result(0, RUNNING)]})


def settings_for(tmp_path: Path, ollama: FakeOllama, **overrides: Any) -> Settings:
    base = Settings(host="127.0.0.1", osc_port=free_port(), http_port=free_port(), data_dir=tmp_path / "data",
                    ollama_url=ollama.url)
    return dataclasses.replace(base, **overrides)


async def diagnose(settings: Settings, launchctl: RecordingLaunchctl | None = None) -> tuple[Report, dict[str, Check]]:
    report = await doctor.diagnose(settings, launchctl=launchctl or agent(), platform="darwin")
    assert [c.name for c in report.checks] == NAMES
    return report, {c.name: c for c in report.checks}


# ------------------------------------------------------------------------------------------------------------
# A healthy setup, and each thing that can be wrong
# ------------------------------------------------------------------------------------------------------------


async def test_healthy_setup_is_all_ok(tmp_path: Path, database_url: str, ollama: FakeOllama) -> None:
    async with running(make_settings(tmp_path, database_url, http_port=free_port())) as bridge:
        settings = dataclasses.replace(bridge.settings, ollama_url=ollama.url)
        report, checks = await diagnose(settings)
    assert {c.status for c in report.checks} == {"ok"}, report.text()
    assert report.exit_code == 0

    assert checks["database"].message.startswith("PostgreSQL 18.")
    assert checks["database"].message.endswith("(Unix socket)")
    assert checks["pgvector"].message == "pgvector 0.8.5"
    assert checks["schema"].message == f"version {SCHEMA_VERSION} (current)"
    storage = checks["storage"]
    assert storage.message.startswith("database ") and storage.details["database_bytes"] > 0
    assert {"mission_control_debug", "messages", "schema_version"} <= {t["name"] for t in storage.details["tables"]}
    assert checks["ollama"].message == f"Ollama 0.12.3 at {ollama.url}: nomic-embed-text pulled, 768 dimensions"
    port = checks["osc_port"]
    assert f"held by a running oscbridge {__version__}" in port.message
    assert port.details["state"] == "bridge" and port.details["database_up"] is True
    assert checks["launchd"].message == "the LaunchAgent is running (pid 4242, started 1 time)"
    assert checks["web"].message == (f"http://127.0.0.1:{settings.http_port}/ serves the web page of oscbridge "
                                     f"{__version__}; `oscbridge ui` opens it")
    assert report.text().splitlines()[-1] == "No problems found."


async def test_unreachable_database_fails_and_never_shows_the_password(tmp_path: Path, ollama: FakeOllama) -> None:
    url = f"postgresql://oscbridge:{SECRET}@127.0.0.1:{free_port()}/oscbridge?sslmode=disable"
    report, checks = await diagnose(settings_for(tmp_path, ollama, database_url=url))
    assert report.exit_code == 1
    db = checks["database"]
    assert db.status == "fail"
    assert db.message.startswith("cannot connect to postgresql://oscbridge:***@127.0.0.1:")
    assert db.fix is not None and "docker compose up -d postgres" in db.fix
    assert checks["pgvector"].status == checks["schema"].status == checks["storage"].status == "skip"
    assert {c.status for c in report.checks if c.name not in doctor.DATABASE_CHECKS} == {"ok"}
    assert SECRET not in report.text() and SECRET not in json.dumps(report.as_dict())


async def test_a_database_that_never_answers_times_out(tmp_path: Path, ollama: FakeOllama,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "DB_TIMEOUT", 0.3)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # the kernel accepts the connection; nobody ever answers
    try:
        url = f"postgresql://oscbridge@127.0.0.1:{silent.getsockname()[1]}/oscbridge?sslmode=disable"
        started = time.monotonic()
        report, checks = await diagnose(settings_for(tmp_path, ollama, database_url=url))
    finally:
        silent.close()
    assert time.monotonic() - started < 3
    assert checks["database"].status == "fail" and "no answer within 0.3 s" in checks["database"].message
    assert report.exit_code == 1


async def test_embedded_database_running_then_stopped(tmp_path: Path, ollama: FakeOllama) -> None:
    settings = settings_for(tmp_path, ollama)
    report, checks = await diagnose(settings)
    assert checks["database"].status == "ok" and "not created yet" in checks["database"].message
    assert checks["pgvector"].message == "pgvector 0.8.5 available; the extension is created at start"
    assert checks["schema"].status == "skip"

    server = EmbeddedPostgres(settings.embedded_pgdata)
    await asyncio.to_thread(server.start)  # the server, but not yet the bridge's database
    try:
        report, checks = await diagnose(settings)
        assert checks["database"].status == "ok"
        assert checks["database"].message.startswith("embedded PostgreSQL 18.")
        assert f"running in {settings.embedded_pgdata}" in checks["database"].message
        assert checks["schema"].message == f"not applied yet; version {SCHEMA_VERSION} will be applied at start"
        assert report.exit_code == 0
    finally:
        await asyncio.to_thread(server.stop)

    report, checks = await diagnose(settings)
    assert checks["database"].status == "ok"
    assert checks["database"].message.endswith("is not running; the bridge starts it")
    assert report.exit_code == 0


async def test_missing_ollama(tmp_path: Path, ollama: FakeOllama) -> None:
    ollama.stop()
    report, checks = await diagnose(settings_for(tmp_path, ollama))
    check = checks["ollama"]
    assert check.status == "fail" and check.message.startswith(f"cannot reach Ollama at {ollama.url}")
    assert check.fix is not None and "`ollama serve`" in check.fix
    assert report.exit_code == 1
    assert "FAIL  ollama" in report.text() and report.text().splitlines()[-1] == "1 problem found."


async def test_model_not_pulled(tmp_path: Path, ollama: FakeOllama) -> None:
    ollama.set_models(["llama3.2:latest"])
    report, checks = await diagnose(settings_for(tmp_path, ollama))
    check = checks["ollama"]
    assert check.status == "fail" and "does not have the model 'nomic-embed-text'" in check.message
    assert check.fix is not None and check.fix.startswith("run `ollama pull nomic-embed-text`")
    assert report.exit_code == 1


async def test_wrong_model_dimension(tmp_path: Path, ollama: FakeOllama) -> None:
    ollama.set_dim(384)
    report, checks = await diagnose(settings_for(tmp_path, ollama))
    check = checks["ollama"]
    assert check.status == "fail"
    assert check.message == "'nomic-embed-text' returns 384-dimensional vectors, oscbridge is configured for 768"
    assert check.fix is not None and "OSCBRIDGE_EMBED_DIM=384" in check.fix
    assert check.details["dim"] == 384 and check.details["expected_dim"] == 768
    assert report.exit_code == 1


async def test_a_slow_check_is_cut_off_not_waited_for(tmp_path: Path, ollama: FakeOllama,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "CHECK_DEADLINE", 0.3)
    ollama.set_delay(3.0)
    started = time.monotonic()
    report, checks = await diagnose(settings_for(tmp_path, ollama))
    assert time.monotonic() - started < 2
    assert checks["ollama"].status == "fail" and checks["ollama"].message == "no answer within 0.3 s"
    assert report.exit_code == 1


@pytest.mark.parametrize("kind", ["UDP", "TCP"])
async def test_port_held_by_another_program(tmp_path: Path, ollama: FakeOllama, kind: str) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if kind == "UDP" else socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    if kind == "TCP":
        holder.listen()
    try:
        port = holder.getsockname()[1]
        report, checks = await diagnose(settings_for(tmp_path, ollama, osc_port=port))
    finally:
        holder.close()
    check = checks["osc_port"]
    assert check.status == "fail"
    assert check.message == f"127.0.0.1:{port} ({kind}) is held by another program, which does not answer /bridge/ping"
    assert check.fix is not None and f"lsof -nP -i :{port}" in check.fix
    assert report.exit_code == 1


async def test_web_port_held_by_another_program_or_off(tmp_path: Path, ollama: FakeOllama) -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        report, checks = await diagnose(settings_for(tmp_path, ollama, http_port=port))
    finally:
        holder.close()
    check = checks["web"]
    assert check.status == "fail" and check.message == f"TCP port {port} (the web page) is held by another program"
    assert check.fix is not None and "--http-port" in check.fix and report.exit_code == 1

    _, checks = await diagnose(settings_for(tmp_path, ollama, http_port=0))
    assert checks["web"].status == "skip" and checks["web"].message == "the web page is off (http_port = 0)"


async def test_free_port(tmp_path: Path, ollama: FakeOllama) -> None:
    settings = settings_for(tmp_path, ollama)
    _, checks = await diagnose(settings)
    assert checks["osc_port"].status == "ok"
    assert checks["osc_port"].message == f"127.0.0.1:{settings.osc_port} (UDP and TCP) is free: no bridge is running " \
        "here"


async def test_launchd_states(tmp_path: Path, ollama: FakeOllama) -> None:
    settings = settings_for(tmp_path, ollama)
    report = await doctor.diagnose(settings, platform="linux")
    assert report.checks[-1] == Check("launchd", "skip", "skipped: launchd is macOS only")
    assert report.exit_code == 0

    report, checks = await diagnose(settings, agent(NOT_FOUND))
    assert checks["launchd"].status == "warn" and "not loaded" in checks["launchd"].message
    assert checks["launchd"].fix == "run `oscbridge launchd install`"
    assert report.exit_code == 0  # a warning alone does not fail the doctor

    stand_in = agent(Result(0, CRASHED))
    report, checks = await diagnose(settings, stand_in)
    assert checks["launchd"].status == "fail"
    assert checks["launchd"].message.endswith("last exit code 78: EX_CONFIG")
    assert report.exit_code == 1
    assert stand_in.calls == [["print", f"gui/{os.getuid()}/com.chattychannels.oscbridge"]]


@pytest.mark.parametrize(("sql", "status", "text"), [
    ("", "ok", f"not applied yet; version {SCHEMA_VERSION} will be applied at start"),
    ("INSERT INTO schema_version VALUES (0, 'old')", "warn", f"version 0; this oscbridge has version {SCHEMA_VERSION}"),
    ("INSERT INTO schema_version VALUES (99, 'future')", "fail", "version 99 is newer than this oscbridge knows"),
])
async def test_schema_versions(tmp_path: Path, ollama: FakeOllama, empty_database_url: str, sql: str,
                               status: str, text: str) -> None:
    database_url = empty_database_url
    if sql:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("CREATE TABLE schema_version (version integer PRIMARY KEY, description text)")
            await conn.execute(sql)
        finally:
            await conn.close()
    report, checks = await diagnose(settings_for(tmp_path, ollama, database_url=database_url))
    assert checks["schema"].status == status and checks["schema"].message.startswith(text)
    assert report.exit_code == (1 if status == "fail" else 0)


@pytest.mark.parametrize(("installed", "available", "status", "text"), [
    ("0.8.5", "0.8.5", "ok", "pgvector 0.8.5"),
    (None, "0.8.4", "ok", "pgvector 0.8.4 available; the extension is created at start"),
    ("0.8.2", "0.8.2", "warn", "pgvector 0.8.2 is older than 0.8.4: 0.8.3 and 0.8.4 fix HNSW vacuum bugs"),
    (None, "0.7.4", "warn", "pgvector 0.7.4 is older than 0.8.4"),
    ("0.8.4", "0.8.6", "warn", "pgvector 0.8.4 in the database, 0.8.6 installed on the server"),
    (None, None, "fail", "the PostgreSQL server has no pgvector extension"),
])
def test_pgvector_versions(installed: str | None, available: str | None, status: str, text: str) -> None:
    check = doctor.pgvector_check(installed, available, "here")
    assert check.status == status and check.message.startswith(text)
    assert (check.fix is None) == (status == "ok")


MIB = 1024 * 1024


def sizes(debug_bytes: int, total: int) -> Sizes:
    return Sizes([TableSize("mission_control_debug", 1000, debug_bytes), TableSize("messages", 10, MIB)], total)


@pytest.mark.parametrize(("debug", "retention", "free", "status", "says"), [
    (10 * MIB, 30.0, 100 * 1024 * MIB, "ok", "database 20 MiB; biggest: mission_control_debug 10 MiB (~1000 rows)"),
    (2048 * MIB, 0.0, 100 * 1024 * MIB, "warn", "debug traffic is kept for ever"),
    (2048 * MIB, 30.0, 100 * 1024 * MIB, "ok", "database"),  # big, but retention will shrink it
    (10 * MIB, 30.0, 5 * MIB, "warn", "a backup would not fit"),
])
def test_storage_sizes(debug: int, retention: float, free: int, status: str, says: str) -> None:
    check = doctor.storage_check(sizes(debug, max(debug * 2, 20 * MIB)), retention, free)
    assert check.status == status and says in check.message, check.message
    assert (check.fix is None) == (status == "ok")


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://u:pw@db.lan/x", "postgresql://u:***@db.lan/x"),
    ("postgresql://u:p@ss@db.lan:5432/x?sslmode=require", "postgresql://u:***@db.lan:5432/x?sslmode=require"),
    ("postgresql://u@db.lan/x?password=pw&sslmode=require", "postgresql://u@db.lan/x?password=***&sslmode=require"),
    ("postgresql:///x?host=/tmp&sslpassword=key", "postgresql:///x?host=/tmp&sslpassword=***"),
    ("postgresql://postgres@/oscbridge?host=/tmp/pg", "postgresql://postgres@/oscbridge?host=/tmp/pg"),
])
def test_redact(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# ------------------------------------------------------------------------------------------------------------
# The command line: text and --json
# ------------------------------------------------------------------------------------------------------------


def test_backup_ages(tmp_path: Path, ollama: FakeOllama) -> None:
    """None yet, none long after the first start, fresh, late (the bridge did not run or its backups fail), off,
    unreadable; a file that is not a backup is not counted, one made by hand counts as much as a scheduled one."""
    settings = settings_for(tmp_path, ollama, backup_every=86400.0)
    now = time.time()
    check = doctor.backup_check(settings, now)
    assert (check.status, check.details["count"]) == ("ok", 0)
    assert check.message.startswith("none yet: the bridge writes one every 24 h 0 min")
    settings.data_dir.mkdir()
    identity = settings.data_dir / "bridge.json"  # written at the first start
    identity.write_text("{}")
    os.utime(identity, (now - 50 * 3600, now - 50 * 3600))
    check = doctor.backup_check(settings, now)
    assert check.status == "warn" and check.message.startswith("none yet, 50 h 0 min after the bridge's first start")
    settings.backups_dir.mkdir(parents=True)
    (settings.backups_dir / "notes.txt").write_text("not a backup")
    old = settings.backups_dir / "auto-20261101T000000.000Z.tar"
    old.write_bytes(b"")
    os.utime(old, (now - 40 * 3600, now - 40 * 3600))
    check = doctor.backup_check(settings, now)
    assert check.status == "warn" and check.details["count"] == 1
    assert check.message == (f"the newest of 1 is 40 h 0 min old ({old.name}); one every 24 h 0 min: the bridge "
                             "has not been running, or its backups fail")
    assert check.fix is not None and "`oscbridge backup`" in check.fix
    by_hand = settings.backups_dir / "backup-20261102T000000Z.tar"
    by_hand.write_bytes(b"")
    os.utime(by_hand, (now - 3 * 3600, now - 3 * 3600))
    check = doctor.backup_check(settings, now)
    assert (check.status, check.details["newest"], check.details["count"]) == ("ok", str(by_hand), 2)
    off = doctor.backup_check(dataclasses.replace(settings, backup_every=0.0), now)
    assert off.status == "skip" and "off" in off.message
    blocked = dataclasses.replace(settings, data_dir=tmp_path / "file")
    (tmp_path / "file").write_text("a file where the data dir should be")
    unreadable = doctor.backup_check(blocked, now)
    assert unreadable.status == "warn" and unreadable.message.startswith("cannot read ")


def test_cli_json_shape_and_exit_codes(tmp_path: Path, ollama: FakeOllama) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "OSCBRIDGE_OLLAMA_URL": ollama.url}
    args = ("doctor", "--data-dir", str(tmp_path / "data"), "--osc-port", str(free_port()))
    out = run_cli(*args, "--json", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert set(report) == {"oscbridge", "ok", "exit_code", "counts", "checks"}
    assert report["oscbridge"] == __version__ and report["ok"] is True and report["exit_code"] == 0
    assert [c["name"] for c in report["checks"]] == NAMES
    for check in report["checks"]:
        assert set(check) == {"name", "status", "message", "fix", "details"}
        assert check["status"] in ("ok", "warn", "fail", "skip")
    assert sum(report["counts"].values()) == len(NAMES) and report["counts"]["fail"] == 0

    ollama.stop()
    out = run_cli(*args, "--json", env=env)
    report = json.loads(out.stdout)
    assert out.returncode == 1 and report["ok"] is False and report["counts"]["fail"] == 1
    out = run_cli(*args, env=env)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[0] == f"oscbridge doctor {__version__}"
    assert any(line.startswith("FAIL  ollama    cannot reach Ollama") for line in lines)
    assert lines[-1] == "1 problem found."
