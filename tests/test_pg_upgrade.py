"""Upgrades of the embedded PostgreSQL: a data directory made by PostgreSQL 16 (with the 16 binaries the same wheel
ships) is upgraded to 18 by the bridge at start, with its projects, mappings, messages and embeddings intact and the
HNSW index answering; a failed upgrade leaves it as it was; a directory from a newer major is refused.

The 16 directory is made once per module (about 3 s) and copied for each test.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from oscbridge.client import BridgeClient
from oscbridge.store.db import Database
from oscbridge.store.embedded import EMBEDDED_MAJOR, EmbeddedPostgres
from oscbridge.store.upgrade import (
    StepFailed,
    UpgradeError,
    compare,
    data_dir_major,
    kept_copies,
    open_server,
    recover,
    work_area,
)
from oscbridge.tools.doctor import database_checks
from tests.conftest import free_port, make_settings, run_cli, running, wait_until

OLD_MAJOR = 16
MAPPINGS = [[1, "Kick", "TR1", -1, ""], [2, "Snare", "TR2", -1, ""], [3, "Bass", "TR3", -1, ""]]
MESSAGES = 60
DIM = 768


def vector(seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(-1.0, 1.0) for _ in range(DIM)]


def as_text(values: list[float]) -> str:
    return "[" + ",".join(f"{v:.6f}" for v in values) + "]"


async def fill(admin_url: str, pgdata: Path) -> dict[str, int]:
    """The bridge's database and schema on the 16 server, with two projects, sessions, three current mappings of
    the project opened last and messages with embeddings (message i has the embedding `vector(i)`); returns the
    rows per table."""
    url = await EmbeddedPostgres(pgdata).ensure_database(admin_url)
    db = Database(url)
    await db.connect()  # applies the schema, as the bridge does
    await db.close()
    conn = await asyncpg.connect(url)
    try:
        older = await conn.fetchval(
            "INSERT INTO projects (name, last_opened_at) VALUES ('Older Song', now() - interval '1 day') RETURNING id")
        song = await conn.fetchval(
            "INSERT INTO projects (name, last_opened_at) VALUES ('Upgrade Song', now()) RETURNING id")
        sessions = {}
        for project in (older, song):
            sessions[project] = await conn.fetchval(
                "INSERT INTO sessions (project_id) VALUES ($1) RETURNING id", project)
        await conn.executemany(
            "INSERT INTO track_assignments (project_id, session_id, track_number, track_name, plugin_id) "
            "VALUES ($1, $2, $3, $4, $5)",
            [(song, sessions[song], number, name, plugin) for number, name, plugin, *_ in MAPPINGS])
        await conn.executemany(
            "INSERT INTO messages (project_id, session_id, role, content, embedding, embedding_model, embedded_at) "
            "VALUES ($1, $2, 'user', $3, $4::text::vector, 'nomic-embed-text', now())",
            [(song, sessions[song], f"message {i}", as_text(vector(i))) for i in range(MESSAGES)])
        return {name: await conn.fetchval(f"SELECT count(*) FROM {name}")
                for name in ("projects", "sessions", "track_assignments", "messages")}
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def pg16(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, int]]]:
    """A stopped PostgreSQL 16 data directory holding the bridge's data, and its row counts."""
    pgdata = tmp_path_factory.mktemp("pg16") / "postgres"
    server = open_server(pgdata, OLD_MAJOR)
    try:
        counts = asyncio.run(fill(server.get_uri(), pgdata))
    finally:
        server.cleanup()
    assert data_dir_major(pgdata) == str(OLD_MAJOR)
    yield pgdata, counts


def copy_of(template: Path, data_dir: Path) -> Path:
    """A copy of the template in `data_dir` (ownership and modes kept: the server's OS user owns it as root)."""
    data_dir.mkdir(parents=True)
    pgdata = data_dir / "postgres"
    subprocess.run(["cp", "-a", str(template), str(pgdata)], check=True)
    return pgdata


async def old_counts(pgdata: Path) -> tuple[dict[str, int], str]:
    """Row counts and checksum setting of the 16 directory, read with the 16 server."""
    server = await asyncio.to_thread(open_server, pgdata, OLD_MAJOR)
    try:
        conn = await asyncpg.connect(server.get_uri().replace("/postgres?", "/oscbridge?"))
        try:
            counts = {name: await conn.fetchval(f"SELECT count(*) FROM {name}")
                      for name in ("projects", "sessions", "track_assignments", "messages")}
            return counts, await conn.fetchval("SHOW data_checksums")
        finally:
            await conn.close()
    finally:
        await asyncio.to_thread(server.cleanup)


async def test_a_16_data_dir_is_upgraded_at_start(pg16: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    template, counts = pg16
    settings = make_settings(tmp_path, None)
    pgdata = copy_of(template, settings.data_dir)

    [database, *_] = await database_checks(settings)
    assert database.status == "ok" and f"PostgreSQL {OLD_MAJOR} data directory" in database.message
    assert f"the next start upgrades it to {EMBEDDED_MAJOR}" in database.message

    async with running(settings) as bridge:
        assert data_dir_major(pgdata) == str(EMBEDDED_MAJOR)
        [kept] = kept_copies(pgdata)
        assert kept.name.startswith(f"postgres.pg{OLD_MAJOR}-") and data_dir_major(kept) == str(OLD_MAJOR)
        assert not work_area(pgdata).exists()
        [database, *_] = await database_checks(settings)
        assert database.message.startswith(f"embedded PostgreSQL {EMBEDDED_MAJOR}.")
        assert database.message.endswith(f"; the next start removes {kept}, kept by the last upgrade")

        client = await BridgeClient.connect("127.0.0.1", bridge.port)
        try:
            assert (await client.call("/bridge/project/current"))[0] == "Upgrade Song"
            assert await client.rows("/bridge/mapping/list") == MAPPINGS
        finally:
            await client.close()

        async with bridge.db.acquire() as conn:
            assert await conn.fetchval("SELECT current_setting('server_version_num')::int / 10000") == EMBEDDED_MAJOR
            for name, rows in counts.items():
                if name != "sessions":  # the bridge opened a session of its own
                    assert await conn.fetchval(f"SELECT count(*) FROM {name}") == rows, name
            probe = as_text([v + 0.01 for v in vector(42)])  # near message 42 only
            query = "SELECT content FROM messages ORDER BY embedding <=> $1::text::vector LIMIT 1"
            async with conn.transaction():
                await conn.execute("SET LOCAL enable_seqscan = off")
                plan = "\n".join(row[0] for row in await conn.fetch("EXPLAIN " + query, probe))
                assert "Index Scan using idx_messages_embedding" in plan
                assert await conn.fetchval(query, probe) == "message 42"

    mine = settings.data_dir / f"postgres.pg{OLD_MAJOR}-mine"  # named by the user: not a copy the bridge kept
    mine.mkdir()
    async with running(settings):
        assert kept_copies(pgdata) == []  # the second successful start removed the old copy
        assert not kept.exists() and mine.exists()
    assert data_dir_major(pgdata) == str(EMBEDDED_MAJOR)


async def test_a_failed_upgrade_leaves_the_data_dir_as_it_was(
        pg16: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    """A real refusal of pg_upgrade: a column of type regproc, whose values (OIDs) do not survive an upgrade."""
    template, counts = pg16
    data_dir = tmp_path / "data"
    pgdata = copy_of(template, data_dir)
    server = await asyncio.to_thread(open_server, pgdata, OLD_MAJOR)
    try:
        conn = await asyncpg.connect(server.get_uri().replace("/postgres?", "/oscbridge?"))
        await conn.execute("CREATE TABLE odd (f regproc); INSERT INTO odd VALUES ('now')")
        await conn.close()
    finally:
        await asyncio.to_thread(server.cleanup)

    result = await asyncio.to_thread(run_cli, "serve", "--data-dir", str(data_dir), "--osc-port", str(free_port()))
    assert result.returncode == 78, result.stderr
    assert f"from PostgreSQL {OLD_MAJOR} to {EMBEDDED_MAJOR} failed while running pg_upgrade" in result.stderr
    assert "reg* data types in user tables" in result.stderr  # pg_upgrade's own reason
    assert "public.odd.f" in result.stderr  # from the list of problem columns it wrote in the removed work area
    assert f"Nothing was changed: {pgdata} is still the PostgreSQL {OLD_MAJOR} data directory" in result.stderr
    assert "Traceback" not in result.stderr

    assert data_dir_major(pgdata) == str(OLD_MAJOR)
    assert kept_copies(pgdata) == [] and not work_area(pgdata).exists()
    assert sorted(p.name for p in data_dir.iterdir() if p.name.startswith("postgres")) == ["postgres"]
    assert await old_counts(pgdata) == (counts, "off")  # the data, and checksums still off (not enabled in place)


def processes_naming(path: Path) -> list[str]:
    """The command lines of the running processes that name `path` (servers: `postgres -D <dir>`, pg_upgrade,
    initdb)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # ended meanwhile
            if str(path) in command:
                found.append(command)
    return found


async def test_a_second_ctrl_c_during_an_upgrade_leaves_nothing_running_and_the_next_start_upgrades(
        pg16: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
    """The second signal ends the process at once (os._exit): pg_upgrade and the servers it started must not
    outlive it, and the next start upgrades again from the untouched old directory."""
    template, _ = pg16
    settings = make_settings(tmp_path, None)
    pgdata = copy_of(template, settings.data_dir)
    serve = subprocess.Popen([sys.executable, "-m", "oscbridge", "serve", "--data-dir", str(settings.data_dir),
                              "--osc-port", str(free_port())], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await wait_until(lambda: any("pg_upgrade" in c for c in processes_naming(work_area(pgdata))), timeout=60,
                         interval=0.02)
        serve.send_signal(signal.SIGINT)
        await asyncio.sleep(0.4)  # past the window in which a second signal counts as the same one
        serve.send_signal(signal.SIGINT)
        _, stderr = await asyncio.to_thread(serve.communicate, timeout=30)
    finally:
        serve.kill()
    assert serve.returncode == 1, stderr.decode()[-2000:]
    abandoned = [json.loads(line) for line in stderr.splitlines() if b"embedded_upgrade_abandoned" in line]
    assert len(abandoned) == 1 and "pg_upgrade" in abandoned[0]["ended"], stderr.decode()[-2000:]
    await wait_until(lambda: not processes_naming(settings.data_dir), timeout=40)

    assert data_dir_major(pgdata) == str(OLD_MAJOR)
    async with running(settings) as bridge:
        assert data_dir_major(pgdata) == str(EMBEDDED_MAJOR) and not work_area(pgdata).exists()
        client = await BridgeClient.connect("127.0.0.1", bridge.port)
        try:
            assert await client.rows("/bridge/mapping/list") == MAPPINGS
        finally:
            await client.close()


def test_a_data_dir_from_a_newer_major_is_refused(tmp_path: Path) -> None:
    pgdata = tmp_path / "postgres"
    pgdata.mkdir()
    (pgdata / "PG_VERSION").write_text(f"{EMBEDDED_MAJOR + 1}\n")
    with pytest.raises(UpgradeError) as err:
        EmbeddedPostgres(pgdata).start()
    assert str(err.value) == (
        f"{pgdata} was made by PostgreSQL {EMBEDDED_MAJOR + 1}, newer than the PostgreSQL {EMBEDDED_MAJOR} this "
        "oscbridge runs: upgrade oscbridge, or point --data-dir at another directory. Nothing was changed.")
    assert [p.name for p in pgdata.iterdir()] == ["PG_VERSION"]


def test_a_data_dir_from_an_unshipped_older_major_is_refused(tmp_path: Path) -> None:
    pgdata = tmp_path / "postgres"
    pgdata.mkdir()
    (pgdata / "PG_VERSION").write_text("9.6\n")
    with pytest.raises(UpgradeError, match=r"made by PostgreSQL 9\.6, which this oscbridge cannot upgrade"):
        EmbeddedPostgres(pgdata).start()


def test_an_upgrade_cut_short_during_the_swap_is_undone(tmp_path: Path) -> None:
    """Power lost between the two renames: no data dir, the old one kept aside, the work area left behind."""
    pgdata = tmp_path / "postgres"
    kept = tmp_path / f"postgres.pg{OLD_MAJOR}-20260101T120000Z"
    kept.mkdir()
    (kept / "PG_VERSION").write_text(f"{OLD_MAJOR}\n")
    (work_area(pgdata) / "new").mkdir(parents=True)
    recover(pgdata)
    assert data_dir_major(pgdata) == str(OLD_MAJOR)  # the old one is back, to be upgraded again
    assert not kept.exists() and not work_area(pgdata).exists()


def test_the_check_after_the_upgrade_names_every_table_that_differs() -> None:
    before = {"oscbridge/public.messages": 60, "oscbridge/public.projects": 2, "oscbridge/public.odd": 1}
    after = {"oscbridge/public.messages": 59, "oscbridge/public.projects": 2}
    with pytest.raises(StepFailed) as err:
        compare(before, after)
    assert str(err.value) == ("the upgraded data does not match the old: oscbridge/public.messages: 60 rows before, "
                              "59 after; oscbridge/public.odd: 1 rows before, None after")
    compare(before, dict(before))
