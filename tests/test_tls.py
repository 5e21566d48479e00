"""Verified TLS, for real: a server on 127.0.0.1 with a certificate from a CA the test makes, which takes only TLS
connections and a SCRAM password that only ~/.pgpass (PGPASSFILE) knows. `sslmode=verify-full` with that CA
connects and the bridge serves; a wrong CA or a host name the certificate does not name is refused with a message
that says which, at the bridge's start and by the doctor; the password never reaches a log.

The TLS server is PgBouncer in session mode in front of the tests' PostgreSQL (tests/pg_support.py says why: the
wheel's PostgreSQL has no TLS); the bridge cannot tell the difference, PostgreSQL's TLS negotiation is the same."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from oscbridge.client import BridgeClient
from oscbridge.store.roles import scram_verifier
from oscbridge.tools.bridge_process import BridgeProcess
from oscbridge.tools.db import write_passfile
from tests.conftest import EmbeddedServer, free_port, make_settings, run_cli, running
from tests.pg_support import EXIT_CONFIG, USER, PgBouncer, TestCA, refusal, socket_of


@dataclass
class TlsServer:
    bouncer: PgBouncer
    pg: EmbeddedServer
    ca: TestCA
    password: str
    passfile: Path

    def url(self, database: str, *, host: str = "127.0.0.1", ca: Path | None = None, password: str = "",
            sslmode: str = "verify-full") -> str:
        secret = f":{password}" if password else ""
        return (f"postgresql://{USER}{secret}@{host}:{self.bouncer.port}/{database}"
                f"?sslmode={sslmode}&sslrootcert={ca or self.ca.cert}")

    async def new_database(self) -> str:
        """A database of its own for a test, owned by the studio role, with pgvector (not a trusted extension)
        created by the administrator."""
        name = "t_" + uuid.uuid4().hex[:12]
        admin = await asyncpg.connect(self.pg.admin_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}" OWNER {USER}')
        finally:
            await admin.close()
        conn = await asyncpg.connect(self.pg.url_of(name))
        try:
            await conn.execute("CREATE EXTENSION vector")
        finally:
            await conn.close()
        return name


@pytest.fixture(scope="module")
def tls(pg: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    root = tmp_path_factory.mktemp("tls")
    ca = TestCA(root / "ca")
    cert, key = ca.issue("server", "IP:127.0.0.1")  # for the address only: `localhost` is another name
    password = "pw-" + uuid.uuid4().hex
    socket_dir, port = socket_of(pg.admin_url)
    # The server keeps the SCRAM verifier, not the password (roles.scram_verifier: this is also its test).
    bouncer = PgBouncer(socket_dir, port, {USER: scram_verifier(password)}, pool_mode="session", pool_size=8,
                        tls=(cert, key))
    bouncer.start()
    passfile = root / "pgpass"
    for host in ("127.0.0.1", "localhost"):
        write_passfile(passfile, host, bouncer.port, "*", {USER: password})

    async def make_role() -> None:
        admin = await asyncpg.connect(pg.admin_url)
        try:
            if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", USER):
                await admin.execute(f"CREATE ROLE {USER} LOGIN")
        finally:
            await admin.close()

    asyncio.run(make_role())
    yield TlsServer(bouncer, pg, ca, password, passfile)
    bouncer.close()


@pytest.fixture
def passfile(tls: TlsServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PGPASSFILE", str(tls.passfile))
    return tls.passfile


async def test_verify_full_with_the_ca_connects_and_the_bridge_serves(tls: TlsServer, passfile: Path,
                                                                       tmp_path: Path) -> None:
    database = await tls.new_database()
    with pytest.raises(asyncpg.ProtocolViolationError, match="SSL required"):
        await asyncpg.connect(tls.url(database, sslmode="disable"))  # the server takes TLS connections only
    async with running(make_settings(tmp_path, tls.url(database))) as bridge:
        client = await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp")
        try:
            await client.call("/bridge/project/open", "Over TLS", "")
            await client.call("/bridge/mapping/set", 1, "Kick", "TR1")
            await client.save_message("user", "over a verified connection", embed=False)
            assert await bridge.writer.flush(10.0)
            assert await client.rows("/bridge/mapping/list") == [[1, "Kick", "TR1", -1, ""]]
        finally:
            await client.close()
        assert bridge.writer.rejected == 0
    conn = await asyncpg.connect(tls.pg.url_of(database))
    try:
        assert await conn.fetchval("SELECT count(*) FROM messages") == 1
    finally:
        await conn.close()


async def test_a_certificate_from_another_ca_is_refused_saying_so(tls: TlsServer, passfile: Path,
                                                                   tmp_path: Path) -> None:
    other = TestCA(tmp_path / "other-ca", name="someone else's CA")
    message = await refusal(tls.url("postgres", ca=other.cert))
    assert f"the server's certificate is not signed by the CA in sslrootcert ({other.cert}" in message
    missing = tmp_path / "nowhere" / "ca.crt"
    message = await refusal(tls.url("postgres", ca=missing))
    assert f"the CA file in sslrootcert ({missing}) cannot be read" in message


async def test_a_host_name_the_certificate_does_not_name_is_refused_saying_which(tls: TlsServer,
                                                                                  passfile: Path) -> None:
    message = await refusal(tls.url("postgres", host="localhost"))
    assert "the server's certificate is for 127.0.0.1, not localhost" in message


def test_the_start_and_the_doctor_say_plainly_why_tls_failed(tls: TlsServer, passfile: Path, tmp_path: Path) -> None:
    other = TestCA(tmp_path / "other-ca", name="someone else's CA")
    env = {**os.environ, "PGPASSFILE": str(passfile)}
    serve = run_cli("serve", "--osc-port", str(free_port()), "--data-dir", str(tmp_path / "data"), "--database-url",
                    tls.url("postgres", ca=other.cert), "--log-level", "warning", env=env)
    assert serve.returncode == EXIT_CONFIG, serve.stderr
    assert "oscbridge: cannot connect to" in serve.stderr and "Traceback" not in serve.stderr
    assert "the server's certificate is not signed by the CA in sslrootcert" in serve.stderr

    doctor = run_cli("doctor", "--json", "--data-dir", str(tmp_path / "data"), "--database-url",
                     tls.url("postgres", host="localhost"), env=env)
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["database"]["status"] == "fail"
    assert "the server's certificate is for 127.0.0.1, not localhost" in checks["database"]["message"]


def test_the_password_comes_from_the_passfile_and_never_reaches_a_log(tls: TlsServer, tmp_path: Path) -> None:
    """The URL holds no password; PGPASSFILE's file does. At debug level, in the log file and on stderr, the
    password is nowhere: not while serving, not when the URL carries it, not when it is wrong."""
    database = asyncio.run(tls.new_database())
    log_file = tmp_path / "bridge.log"
    env = {"PGPASSFILE": str(tls.passfile)}
    with BridgeProcess("--database-url", tls.url(database), "--log-file", str(log_file), extra_env=env,
                       log_level="debug") as bridge:
        asyncio.run(_save_one(bridge.port))
        stderr = bridge.stderr_tail(1 << 20)
    logged = log_file.read_text()
    assert "database_connected" in logged
    assert tls.password not in logged and tls.password not in stderr

    # A password in the URL (which the docs advise against) is masked wherever the URL is logged.
    log_file = tmp_path / "bridge-url-password.log"
    with BridgeProcess("--database-url", tls.url(database, password=tls.password), "--log-file",
                       str(log_file), log_level="debug") as bridge:
        stderr = bridge.stderr_tail(1 << 20)
    logged = log_file.read_text()
    assert "database_connected" in logged and "postgresql://studio:***@127.0.0.1" in logged
    assert tls.password not in logged and tls.password not in stderr

    # A wrong password: the start is refused, saying where the password belongs, and the wrong one is not shown.
    wrong = "wrong-" + uuid.uuid4().hex
    serve = run_cli("serve", "--osc-port", str(free_port()), "--data-dir", str(tmp_path / "data2"), "--database-url",
                    tls.url(database, password=wrong), "--log-file", str(tmp_path / "refused.log"),
                    "--log-level", "debug", env={**os.environ, "PGPASSFILE": "/nonexistent"})
    assert serve.returncode == EXIT_CONFIG, serve.stderr
    assert "refused the login" in serve.stderr and "~/.pgpass" in serve.stderr
    refused_log = (tmp_path / "refused.log").read_text()
    assert "database_refused" in refused_log
    for text in (serve.stderr, serve.stdout, refused_log):
        assert wrong not in text and tls.password not in text


async def _save_one(port: int) -> None:
    client = await BridgeClient.connect("127.0.0.1", port, transport="tcp")
    try:
        await client.save_message("user", "hello", embed=False)
    finally:
        await client.close()
