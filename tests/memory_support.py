"""Helpers shared by the memory tests: a bridge wired to a FakeOllama with short timeouts, and database peeks.

Fixtures cannot be shared between test modules without the (shared) conftest, so each memory test module
defines its small fixtures on top of these functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg

from oscbridge.app import Bridge
from oscbridge.config import Settings
from oscbridge.memory.worker import EmbeddingWorker
from oscbridge.tools.fake_ollama import FakeOllama
from tests.conftest import make_settings, wait_until
from tests.conftest import running as running  # re-exported for the memory tests

# Short enough for tests, long enough that a loaded 2-core machine does not time out healthy requests.
FAST = {"embed_retry_max": 0.3, "embed_timeout": 2.0, "query_embed_timeout": 0.5}


def memory_settings(tmp_path: Path, database_url: str, fake: FakeOllama, **overrides: Any) -> Settings:
    return make_settings(tmp_path, database_url, ollama_url=fake.url, **{**FAST, **overrides})




def worker(bridge: Bridge) -> EmbeddingWorker:
    return bridge.parts.memory


async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def fetchval(url: str, sql: str, *args: Any) -> Any:
    rows = await fetch(url, sql, *args)
    return rows[0][0] if rows else None


async def wait_embedded(url: str, count: int, timeout: float = 10.0) -> None:
    """Until `count` messages have an embedding."""

    async def done() -> bool:
        return bool(await fetchval(url, "SELECT count(*) FROM messages WHERE embedding IS NOT NULL") >= count)

    await wait_until(done, timeout=timeout, interval=0.05)


async def wait_ready(bridge: Bridge, timeout: float = 10.0) -> None:
    """Until the worker checked the column and found Ollama working (semantic search possible)."""
    await wait_until(lambda: worker(bridge).semantic_ready(), timeout=timeout)
