"""`oscbridge doctor` and /bridge/health judge the same disk and the same spool alike (oscbridge/store/levels.py):
a running bridge whose database is down (so writes stay in the spool), the doctor run on the same settings at the
same moment, and each situation's level stated, so that agreeing on "ok" everywhere would not pass."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from oscbridge.client import BridgeClient
from oscbridge.config import Settings
from oscbridge.store.levels import DISK_WARN_BYTES, backlog_level, disk_level, spool_level
from oscbridge.tools import doctor
from tests.conftest import make_settings, running
from tests.test_disk_full import log_line, tmpfs

KIB = 1024


def test_the_levels() -> None:
    assert [disk_level(free, 100) for free in (99, 100, DISK_WARN_BYTES - 1, DISK_WARN_BYTES)] == [
        "fail", "warn", "warn", "ok"]
    assert [backlog_level(held, 100) for held in (74, 75, 99, 100)] == ["ok", "warn", "warn", "fail"]
    assert [spool_level(0, 100, 1), spool_level(100, 100, 1), spool_level(0, 100, 0)] == ["warn", "fail", "ok"]


async def levels(settings: Settings) -> tuple[str, str]:
    """(disk, spool) as the running bridge's /bridge/health says and as the doctor says, which must be the same."""
    async with running(settings) as bridge, await BridgeClient.connect("127.0.0.1", bridge.port) as client:
        health = {name: status for name, status, _ in await client.rows("/bridge/health")}
        doctor_says = (doctor.disk_check(settings).status, doctor.spool_check(settings).status)
    assert (health["disk"], health["writes"]) == doctor_says
    return doctor_says


async def fill(settings: Settings, at_least: int) -> None:
    """Writes acknowledged into the spool (the database is down) until it holds `at_least` bytes."""
    async with running(settings) as bridge, await BridgeClient.connect("127.0.0.1", bridge.port,
                                                                       transport="tcp") as client:
        while bridge.writer.spool.unapplied_bytes < at_least:
            assert await log_line(client, "v" * 500) is not None


async def test_doctor_and_health_agree(tmp_path: Path) -> None:
    down = f"postgresql://postgres@/oscbridge?host={tmp_path}/nowhere"
    settings = make_settings(tmp_path, down, spool_max_bytes=128 * KIB, drain_timeout=0.5, disk_reserve_bytes=0)
    assert await levels(settings) == ("ok", "ok")  # the test machine's disk has more than 1 GiB free
    await fill(settings, 70 * KIB)
    assert await levels(settings) == ("ok", "ok")  # under three quarters of 128 KiB
    # Past three quarters of 80 KiB. (A spool at its cap, "fail", cannot be shown by a running bridge: it refuses
    # the write that would pass the cap, and does not start over a cap lowered below what it holds.)
    assert await levels(replace(settings, spool_max_bytes=80 * KIB)) == ("ok", "warn")

    other = make_settings(tmp_path / "other", down, drain_timeout=0.5)
    other.spool_dir.mkdir(parents=True)
    (other.spool_dir / "rejected.jsonl").write_text('{"error":"x","op":{}}\n')
    assert await levels(other) == ("ok", "warn")  # a write PostgreSQL refused waits for a person

    with tmpfs(tmp_path / "small", "16m") as disk:
        small = replace(settings, data_dir=disk / "data")
        assert await levels(replace(small, disk_reserve_bytes=64 * KIB * KIB)) == ("fail", "ok")  # under the reserve
        assert await levels(small) == ("warn", "ok")  # over the reserve, under 1 GiB
