"""Verified TLS against a real PostgreSQL: Debian's PostgreSQL 15 (built with OpenSSL), started by the test on
127.0.0.1 with a certificate from a test CA, TLS only (`hostssl`) and a SCRAM password that only a passfile
(PGPASSFILE) knows. tests/test_tls.py tests the same through PgBouncer, with a bridge that serves; this file checks
what only a PostgreSQL server can show: the server's own TLS handshake and login, the session it records as
encrypted (pg_stat_ssl), its refusal of a connection without TLS, and its statement log.

PostgreSQL 15 here has no pgvector (Debian bookworm ships none for it), so a verified connection gets the bridge as
far as the schema, where the start stops with the bridge's pgvector message: proof that TLS and the login passed.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from oscbridge.store.db import Database
from oscbridge.store.roles import scram_verifier
from oscbridge.store.schema import SchemaError
from oscbridge.store.tls import certificate_names
from oscbridge.tools.db import write_passfile
from tests.conftest import free_port, run_cli, wait_until
from tests.pg_support import DEBIAN_POSTGRES, EXIT_CONFIG, USER, DebianPostgres, TestCA, refusal

pytestmark = pytest.mark.skipif(
    not (DEBIAN_POSTGRES / "postgres").exists(),
    reason=f"Debian's PostgreSQL 15 is not installed ({DEBIAN_POSTGRES / 'postgres'}): "
           "`apt-get install postgresql-15` (.ci/run does)")

DATABASE = "oscbridge"
NO_PGVECTOR = "the PostgreSQL server has no pgvector extension"


@dataclass
class Server:
    postgres: DebianPostgres
    ca: TestCA
    password: str
    passfile: Path

    def url(self, *, host: str = "127.0.0.1", ca: Path | None = None, sslmode: str = "verify-full") -> str:
        """A URL without a password, as docs/studio.md advises: the driver takes it from PGPASSFILE."""
        return (f"postgresql://{USER}@{host}:{self.postgres.port}/{DATABASE}"
                f"?sslmode={sslmode}&sslrootcert={ca or self.ca.cert}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("tls-postgres")
    ca = TestCA(root / "ca")
    postgres = DebianPostgres(ca.issue("server", "IP:127.0.0.1"))  # for the address only: `localhost` is another
    password = "pw-" + uuid.uuid4().hex
    passfile = root / "pgpass"
    for host in ("127.0.0.1", "localhost"):
        write_passfile(passfile, host, postgres.port, "*", {USER: password})

    async def make_role() -> None:
        admin = await asyncpg.connect(postgres.admin_url)
        try:
            # The verifier, not the password: the server logs every statement (roles.scram_verifier).
            await admin.execute(f"CREATE ROLE {USER} LOGIN PASSWORD '{scram_verifier(password)}'")
            await admin.execute(f"CREATE DATABASE {DATABASE} OWNER {USER}")
        finally:
            await admin.close()

    try:
        postgres.start()
        asyncio.run(make_role())
        yield Server(postgres, ca, password, passfile)
    finally:
        postgres.close()


@pytest.fixture
def passfile(server: Server, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PGPASSFILE", str(server.passfile))
    return server.passfile


async def test_verify_full_with_the_ca_connects_and_the_start_stops_only_at_pgvector(server: Server, passfile: Path,
                                                                                     tmp_path: Path) -> None:
    message = await refusal(server.url(sslmode="disable"))  # the server itself takes TLS connections only
    assert "refused the connection" in message and "no encryption" in message

    db = Database(server.url())
    with pytest.raises(SchemaError, match=NO_PGVECTOR):
        await db.connect(timeout=5.0)
    await db.close()
    # The server logged the bridge's role in, over TLS, with the password it got from the passfile.
    assert f"connection authorized: user={USER} database={DATABASE} SSL enabled" in server.postgres.log.read_text()

    doctor = run_cli("doctor", "--json", "--data-dir", str(tmp_path / "data"), "--database-url", server.url(),
                     env={**os.environ, "PGPASSFILE": str(passfile)})
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["database"]["status"] == "ok", checks["database"]
    assert checks["database"]["message"].startswith("PostgreSQL 15.")
    assert checks["database"]["details"]["tls"] in ("TLSv1.2", "TLSv1.3")  # pg_stat_ssl: the server's own word
    assert checks["pgvector"]["status"] == "fail" and NO_PGVECTOR in checks["pgvector"]["message"]


async def test_a_certificate_from_another_ca_is_refused_saying_so(server: Server, passfile: Path,
                                                                   tmp_path: Path) -> None:
    other = TestCA(tmp_path / "other-ca", name="someone else's CA")
    message = await refusal(server.url(ca=other.cert))
    assert f"the server's certificate is not signed by the CA in sslrootcert ({other.cert}" in message
    assert "unable to get local issuer certificate" in message


async def test_a_host_name_or_address_the_certificate_does_not_name_is_refused_saying_which(
        server: Server, passfile: Path) -> None:
    message = await refusal(server.url(host="localhost"))  # a DNS name against a certificate for an address
    assert "the server's certificate is for 127.0.0.1, not localhost" in message

    # The reverse, an address against a certificate for a name (OpenSSL checks the two differently): the server
    # takes a certificate for `localhost` at a reload, for its new connections.
    postgres, ca = server.postgres, server.ca
    try:
        postgres.install_certificate(*ca.issue("server-localhost", "DNS:localhost"))
        postgres.reload()
        await wait_until(lambda: _names_are(server, ["localhost"]))
        message = await refusal(server.url())
        assert "the server's certificate is for localhost, not 127.0.0.1" in message
    finally:
        postgres.install_certificate(ca.root / "server.crt", ca.root / "server.key")
        postgres.reload()
        await wait_until(lambda: _names_are(server, ["127.0.0.1"]))


async def _names_are(server: Server, names: list[str]) -> bool:
    """Whether the certificate the server presents to a new connection names `names` (the bridge's diagnostic
    handshake, which checks the chain but not the host)."""
    try:
        return await certificate_names(server.url(), str(server.ca.cert)) == names
    except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
        return False


def test_the_password_comes_from_the_passfile_only_and_reaches_no_log(server: Server, tmp_path: Path) -> None:
    """At debug level the bridge's start gets through TLS and the login to the pgvector refusal; the password is
    in neither its log nor its output, nor in the server's log of every statement. Without the passfile the same
    start is refused the login, saying where the password belongs."""
    log_file = tmp_path / "bridge.log"
    serve = run_cli("serve", "--osc-port", str(free_port()), "--data-dir", str(tmp_path / "data"), "--database-url",
                    server.url(), "--log-file", str(log_file), "--log-level", "debug",
                    env={**os.environ, "PGPASSFILE": str(server.passfile)})
    assert serve.returncode == EXIT_CONFIG, serve.stderr
    assert f"oscbridge: {NO_PGVECTOR}" in serve.stderr
    assert "certificate" not in serve.stderr and "cannot connect" not in serve.stderr  # not a TLS message
    logged = log_file.read_text()
    assert '"event": "schema_refused"' in logged and NO_PGVECTOR in logged
    for text in (logged, serve.stderr, serve.stdout, server.postgres.log.read_text()):
        assert server.password not in text

    refused = run_cli("serve", "--osc-port", str(free_port()), "--data-dir", str(tmp_path / "data2"),
                      "--database-url", server.url(), "--log-level", "debug",
                      env={**os.environ, "PGPASSFILE": str(tmp_path / "no-such-passfile")})
    assert refused.returncode == EXIT_CONFIG, refused.stderr
    assert "refused the login" in refused.stderr and "~/.pgpass" in refused.stderr
