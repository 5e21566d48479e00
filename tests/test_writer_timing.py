"""The writer's retry pace with a clock moved by hand (tests/clock_support.py): a batch the database cannot take
is retried after 0.25, 0.5, 1, 2, 4, 5, 5 ... seconds (store/writer.py, backoff.py), a `wake()` ends a wait at
once, and a success starts the pace over. The database is real: a `Database` whose Unix socket directory holds no
socket is down; linking the test server's socket into that directory brings it back."""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest

from oscbridge.projects import project_id_for
from oscbridge.store.core_ops import CORE_OPS
from oscbridge.store.db import Database
from oscbridge.store.spool import Spool
from oscbridge.store.writer import Writer
from oscbridge.store.writes import SessionStart
from tests.clock_support import ManualClock

PACE = [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]  # BACKOFF_FIRST, doubling up to BACKOFF_CAP
NO_SERVER = "postgresql://postgres@/oscbridge"


def with_socket_dir(url: str, directory: Path) -> str:
    """`url` with its Unix socket directory (the `host` parameter) replaced."""
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    query["host"] = str(directory)
    return urlunsplit(parts._replace(query=urlencode(query)))


def socket_dir_of(url: str) -> Path:
    return Path(parse_qs(urlsplit(url).query)["host"][0])


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """An empty directory for a server's socket; short, because a Unix socket path holds at most 107 bytes."""
    with tempfile.TemporaryDirectory(prefix="pgsock", dir="/tmp") as name:
        yield Path(name)


class Rig:
    """A writer with a manual clock, on a real spool and a real `Database` at `url`."""

    def __init__(self, url: str, spool_dir: Path) -> None:
        self.clock = ManualClock()
        self.db = Database(url)
        self.spool = Spool(spool_dir, max_bytes=1 << 20, reserve_bytes=0)
        self.writer = Writer(self.db, self.spool, CORE_OPS, clock=self.clock)
        self.start = self.clock.monotonic()

    def submit(self, name: str) -> None:
        self.writer.submit(SessionStart(project_id_for(name), name, "", str(uuid.uuid4()), None, self.clock.time()))

    async def asked(self, count: int) -> list[float]:
        """The waits the writer asked for, once there are `count` (a few real seconds at most). The test runs
        before the last of them begins, so a `wake()` now cuts that one short."""
        async with asyncio.timeout(10):
            await self.clock.asked_at_least(count)
        return self.clock.asked

    @property
    def elapsed(self) -> float:
        return self.clock.monotonic() - self.start


@asynccontextmanager
async def writing(url: str, spool_dir: Path) -> AsyncIterator[Rig]:
    rig = Rig(url, spool_dir)
    rig.writer.start()
    try:
        yield rig
    finally:
        await rig.writer.stop(0.0)  # what is left stays in the spool
        rig.spool.close()
        await rig.db.close()


async def test_a_batch_the_database_cannot_take_is_retried_with_capped_backoff(tmp_path: Path,
                                                                               socket_dir: Path) -> None:
    async with writing(with_socket_dir(NO_SERVER, socket_dir), tmp_path / "spool") as rig:
        rig.submit("Timing")
        assert await rig.asked(len(PACE)) == PACE
        assert rig.elapsed == sum(PACE[:-1])  # the last wait has not begun
        assert rig.spool.pending == 1 and rig.writer.batches == 0 and not rig.db.up


async def test_a_wake_ends_the_wait_at_once(tmp_path: Path, socket_dir: Path) -> None:
    async with writing(with_socket_dir(NO_SERVER, socket_dir), tmp_path / "spool") as rig:
        rig.submit("Timing")
        await rig.asked(3)
        rig.writer.wake()  # during the third wait (1 s)
        assert await rig.asked(4) == PACE[:4]  # tried again at once; a wake alone is no success
        assert rig.elapsed == PACE[0] + PACE[1]  # the third wait took no time


async def test_the_pace_starts_over_once_the_database_took_a_batch(tmp_path: Path, socket_dir: Path,
                                                                   database_url: str) -> None:
    [server_socket] = [p for p in socket_dir_of(database_url).glob(".s.PGSQL.*") if p.suffix != ".lock"]
    async with writing(with_socket_dir(database_url, socket_dir), tmp_path / "spool") as rig:
        rig.submit("Comes back")
        assert await rig.asked(3) == PACE[:3]

        (socket_dir / server_socket.name).symlink_to(server_socket)  # the server is back
        rig.writer.wake()  # as the reconnect loop does then
        assert await rig.writer.flush(30), "the batch did not reach the database"
        assert rig.elapsed == PACE[0] + PACE[1] and rig.db.up

        conn = await asyncpg.connect(database_url)
        try:
            assert await conn.fetchval("SELECT name FROM projects") == "Comes back"
        finally:
            await conn.close()

        await rig.db.close()  # down again
        (socket_dir / server_socket.name).unlink()
        rig.submit("Down again")
        assert (await rig.asked(4))[3] == PACE[0]
