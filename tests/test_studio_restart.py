"""A studio's bridges restarting on one shared PostgreSQL: each resumes its own song, not the one another rig
opened last; a database that refuses the bridge while it reconnects is waited for, not given up on; and a request
that needs the database answers `unavailable` while another bridge holds the schema lock, instead of hanging.

The shared test server is made "unreachable at start" without stopping it: the bridge is given a socket directory
of its own where the server's socket appears only when the test links it in (`LateSocket`)."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import asyncpg
import pytest

from oscbridge.client import BridgeClient, BridgeRequestError
from oscbridge.projects import DEFAULT_PROJECT, project_id_for
from oscbridge.store.db import Database, DatabaseUnavailable
from oscbridge.store.schema import SCHEMA_LOCK_KEY
from oscbridge.tools.db import init_database, url_as
from tests.conftest import EmbeddedServer, make_settings, running, wait_until
from tests.pg_support import socket_of

# How long a test waits for what the bridge does by itself: generous for a loaded 2-core machine. The bridge's
# reconnect backoff is 0.5 s doubling to 10 s.
PATIENCE = 30.0


class LateSocket:
    """A socket directory in which the test server's Unix socket appears only once `link()` is called."""

    def __init__(self, server_url: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="osb-late-"))  # short: a socket path has at most 107 bytes
        server_dir, port = socket_of(server_url)
        self._target = Path(server_dir) / f".s.PGSQL.{port}"
        self._name = self._target.name

    def url(self, url: str) -> str:
        """`url` with its socket directory replaced by this one."""
        parts = urlsplit(url)
        query = [(key, str(self.dir) if key == "host" else value) for key, value in parse_qsl(parts.query)]
        return parts._replace(query=urlencode(query, safe="/")).geturl()

    def link(self) -> None:
        os.symlink(self._target, self.dir / self._name)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def late(pg: EmbeddedServer) -> Iterator[LateSocket]:
    socket = LateSocket(pg.admin_url)
    yield socket
    socket.remove()


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    """The structlog event dicts logged as `name`."""
    return [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == name]


async def current(port: int) -> list[Any]:
    async with await BridgeClient.connect("127.0.0.1", port) as client:
        return await client.call("/bridge/project/current")


async def test_a_restarted_bridge_resumes_its_own_song_not_the_one_another_rig_opened_last(
        tmp_path: Path, database_url: str) -> None:
    """Rig A opens "Song A", rig B "Song B", rig A "Song C" later; launchd restarts rig B: it resumes "Song B" (it
    used to resume "Song C", the latest of all, and put its calibration and traffic into A's song). A bridge new to
    the database starts in "Default Project", as on a new database."""
    a = make_settings(tmp_path / "a", database_url, bridge_name="Rig A")
    b = make_settings(tmp_path / "b", database_url, bridge_name="Rig B")
    async with running(a) as rig_a:
        async with running(b) as rig_b, await BridgeClient.connect("127.0.0.1", a.osc_port) as on_a, \
                await BridgeClient.connect("127.0.0.1", b.osc_port) as on_b:
            await on_a.call("/bridge/project/open", "Song A", "")
            assert await rig_a.writer.flush(5.0)
            await on_b.call("/bridge/project/open", "Song B", "")
            assert await rig_b.writer.flush(5.0)
            await asyncio.sleep(0.01)  # "later" on every clock, however coarse
            await on_a.call("/bridge/project/open", "Song C", "")
            assert await rig_a.writer.flush(5.0)
        async with running(b) as rig_b:
            name, project_id, _ = await current(b.osc_port)
            assert (name, project_id) == ("Song B", project_id_for("Song B"))
            assert rig_b.projects.current.name == "Song B"
        c = make_settings(tmp_path / "c", database_url, bridge_name="Rig C")
        async with running(c):
            assert (await current(c.osc_port))[0] == DEFAULT_PROJECT
    async with running(a):
        assert (await current(a.osc_port))[0] == "Song C"


async def execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_a_database_that_refuses_while_the_bridge_reconnects_is_waited_for_and_the_reason_logged(
        tmp_path: Path, pg: EmbeddedServer, late: LateSocket, caplog: pytest.LogCaptureFixture) -> None:
    """The database was down at start and comes back refusing the bridge's role (a missing GRANT): the bridge logs
    why as `database_refused` (it used to log `schema_not_applied` once and stop reconnecting), keeps serving from
    memory, and connects by itself once the owner grants the right again; what it acknowledged meanwhile is stored."""
    tag = uuid.uuid4().hex[:8]
    database, owner, role = f"restart_{tag}", f"owner_{tag}", f"bridge_{tag}"
    await init_database(pg.admin_url, database=database, owner=owner, bridge=role, passwords={})
    owner_url = url_as(pg.admin_url, owner, database)
    await execute(owner_url, f"REVOKE DELETE ON mission_control_debug FROM {role}")
    caplog.set_level(logging.WARNING)
    settings = make_settings(tmp_path, late.url(url_as(pg.admin_url, role, database)), drain_timeout=2.0)
    async with running(settings) as bridge, await BridgeClient.connect("127.0.0.1", settings.osc_port) as client:
        assert not bridge.db.up and events(caplog, "database_unreachable_at_start")
        await client.call("/bridge/mapping/set", 1, "Kick", "TR1")  # acknowledged: in the spool
        late.link()
        await wait_until(lambda: events(caplog, "database_refused"), PATIENCE)
        [reason] = {event["error"] for event in events(caplog, "database_refused")}
        assert f"the role {role} lacks rights the bridge needs: DELETE on table mission_control_debug" in reason
        assert not events(caplog, "schema_not_applied")
        assert not bridge.db.up
        assert (await client.call("/bridge/mapping/track", "TR1"))[:2] == ["Kick", 1]  # served from memory

        await execute(owner_url, f"GRANT DELETE ON mission_control_debug TO {role}")
        await wait_until(lambda: bridge.db.up, PATIENCE)
        assert await bridge.writer.flush(10.0)
    conn = await asyncpg.connect(owner_url)
    try:
        stored = await conn.fetch("SELECT track_name, plugin_id FROM track_assignments WHERE is_current")
    finally:
        await conn.close()
    assert [tuple(r) for r in stored] == [("Kick", "TR1")]


async def schema_lock_waiters(conn: asyncpg.Connection) -> int:
    """Sessions of `conn`'s database waiting for the schema upgrade's advisory lock (a bigint key below 2**32 is
    the lock's objid)."""
    waiting: int = await conn.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND objid::bigint = $1 "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())", SCHEMA_LOCK_KEY)
    return waiting


async def test_a_request_answers_unavailable_while_another_bridge_holds_the_schema_lock(
        tmp_path: Path, database_url: str, late: LateSocket) -> None:
    """A bridge whose database was unreachable at start reconnects while another bridge (or `oscbridge db upgrade`)
    migrates: its connect waits for the schema lock, and a request that needs the database answers `unavailable`
    (it used to wait behind that connect without end); once the lock is released the bridge connects by itself and
    the same request is answered."""
    holder = await asyncpg.connect(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK_KEY)
        settings = make_settings(tmp_path, late.url(database_url), drain_timeout=2.0)
        async with running(settings) as bridge, \
                await BridgeClient.connect("127.0.0.1", settings.osc_port) as client:
            assert not bridge.db.up
            late.link()
            await wait_until(lambda: schema_lock_waiters(holder), PATIENCE)
            with pytest.raises(BridgeRequestError) as refused:
                await client.rows("/bridge/storage", timeout=PATIENCE)
            assert refused.value.code == "unavailable"
            assert not bridge.db.up

            await holder.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK_KEY)
            await wait_until(lambda: bridge.db.up, PATIENCE)
            rows = await client.rows("/bridge/storage", timeout=PATIENCE)
            assert rows[-1][0] == "database" and rows[-1][2] > 0
    finally:
        await holder.close()


async def test_acquire_waits_for_a_connect_or_the_schema_lock_no_longer_than_its_timeout(database_url: str) -> None:
    """`acquire(timeout)` without a pool: behind a connect in progress (single-flight), or starting the connect
    itself, it gives up after its timeout with a reason that says the database is being connected or upgraded,
    and leaves the connect to go on (cutting it would roll back a long migration at every request); both connect
    once the lock is free."""
    holder = await asyncpg.connect(database_url)
    behind, alone = Database(database_url), Database(database_url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", SCHEMA_LOCK_KEY)
        connecting = asyncio.ensure_future(behind.connect())
        await wait_until(lambda: schema_lock_waiters(holder), PATIENCE)
        for db in (behind, alone):
            with pytest.raises(DatabaseUnavailable, match="being connected or upgraded: no connection within 1 s"):
                async with asyncio.timeout(PATIENCE), db.acquire(timeout=1.0):
                    pass
        assert not connecting.done()
        await wait_until(lambda: _equals(schema_lock_waiters(holder), 2), PATIENCE)  # both connects: none was cut

        await holder.execute("SELECT pg_advisory_unlock($1)", SCHEMA_LOCK_KEY)
        await asyncio.wait_for(connecting, PATIENCE)
        for db in (behind, alone):
            async with db.acquire(timeout=PATIENCE) as conn:
                assert await conn.fetchval("SELECT 1") == 1
            assert db.up
    finally:
        for db in (behind, alone):
            await db.close()
        await holder.close()


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)
