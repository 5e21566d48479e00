"""The embedding worker against a FakeOllama that goes down, hangs, answers errors or the wrong dimension: saves
are answered without waiting for it, nothing is lost, the backfill completes once Ollama is back, without
hammering it; and the dimension check at start changes an empty column or refuses with an explanation."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from oscbridge.app import Bridge
from oscbridge.client import BridgeClient
from oscbridge.embed import DOCUMENT_PREFIX, OllamaClient
from oscbridge.tools.fake_ollama import FakeOllama
from tests.conftest import wait_until
from tests.memory_support import (
    fetch,
    fetchval,
    memory_settings,
    running,
    wait_embedded,
    wait_ready,
    worker,
)

EMBEDDED = "SELECT count(*) FROM messages WHERE embedding IS NOT NULL"
# Seconds a save may take before the test fails. A save is a spool append and a UDP round trip (milliseconds, but an
# append can wait behind the writer's fsync on a loaded machine); one that waited for Ollama would take the 30 s of
# a hung request (HANG), or a client time-out. How fast saves are is measured in bench/, not here.
SAVE_BOUND = 2.0
HANG = 30.0  # embed_timeout while Ollama hangs: a request that lasts the whole test


async def connect(bridge: Bridge) -> BridgeClient:
    return await BridgeClient.connect("127.0.0.1", bridge.port, transport="udp")


async def status(client: BridgeClient) -> dict[str, int]:
    values = await client.call("/bridge/status")
    return {"database_up": values[4], "ollama_up": values[5]}


async def timed_saves(client: BridgeClient, count: int, text: str = "take {i}: tighten the bass") -> float:
    """Saves `count` messages (each acknowledged with its id) and returns the slowest reply time."""
    slowest = 0.0
    for i in range(count):
        started = time.perf_counter()
        assert await client.save_message("user", text.format(i=i))
        slowest = max(slowest, time.perf_counter() - started)
    return slowest


@pytest.fixture
async def bridge(tmp_path: Path, database_url: str, fake: FakeOllama) -> AsyncIterator[Bridge]:
    async with running(memory_settings(tmp_path, database_url, fake)) as b:
        yield b


async def test_saved_while_down_then_embedded_after_a_restart_when_ollama_is_back(
        tmp_path: Path, database_url: str, fake: FakeOllama) -> None:
    fake.stop()
    settings = memory_settings(tmp_path, database_url, fake, embed_batch_size=8)
    async with running(settings) as bridge:
        client = await connect(bridge)
        assert await timed_saves(client, 12) < SAVE_BOUND
        await wait_until(lambda: worker(bridge).status == "down")
        assert (await status(client))["ollama_up"] == 0
        await client.close()
    # Restarted: the backlog is found in the database, not in memory.
    async with running(settings) as bridge:
        client = await connect(bridge)
        assert await fetchval(database_url, EMBEDDED) == 0
        fake.start()
        await wait_embedded(database_url, 12)
        assert (await status(client))["ollama_up"] == 1
        await client.close()
    assert fake.batch_sizes and max(fake.batch_sizes) <= 8
    assert fake.unprefixed == 0
    assert any(text.startswith(DOCUMENT_PREFIX + "take 11") for text in fake.all_inputs)
    rows = await fetch(database_url, "SELECT embedding_model, vector_dims(embedding) AS dims, embedded_at "
                                     "FROM messages")
    assert {(r["embedding_model"], r["dims"]) for r in rows} == {("nomic-embed-text", 768)}
    assert all(r["embedded_at"] is not None for r in rows)


async def test_an_ollama_that_errors_is_retried_with_backoff_not_hammered(
        bridge: Bridge, fake: FakeOllama, database_url: str) -> None:
    await wait_ready(bridge)
    fake.set_fail(503, message="server busy")
    fake.reset_counters()
    client = await connect(bridge)
    started = time.perf_counter()
    assert await timed_saves(client, 30) < SAVE_BOUND  # thirty wake-ups while Ollama refuses
    await wait_until(lambda: time.perf_counter() - started > 2.0, timeout=3)
    attempts = fake.request_count("/api/embed") + fake.request_count("/api/version")
    elapsed = time.perf_counter() - started
    # Backoff 0.5 s doubling, capped at 0.3 s here, with jitter (0.15 to 0.3 s): about 2 s / 0.23 s, at most one
    # attempt per 0.15 s however long the saves took, and never one per save.
    assert 2 <= attempts <= min(1 + elapsed / 0.15, 29), (elapsed, fake.requests)
    assert await fetchval(database_url, EMBEDDED) == 0
    assert worker(bridge).status == "down" and "server busy" in (worker(bridge).last_error or "")
    fake.set_fail(None)
    await wait_embedded(database_url, 30)
    # Set after the batch that stored them returned, which may be just after the test saw them.
    await wait_until(lambda: worker(bridge).status == "up" and worker(bridge).last_error is None)
    await client.close()


async def test_a_hanging_ollama_does_not_delay_saves(tmp_path: Path, database_url: str, fake: FakeOllama) -> None:
    async with running(memory_settings(tmp_path, database_url, fake, embed_timeout=HANG)) as bridge:
        await wait_ready(bridge)
        fake.set_delay(60, "/api/embed")
        fake.reset_counters()
        client = await connect(bridge)
        assert await timed_saves(client, 5) < SAVE_BOUND
        await wait_until(lambda: fake.request_count("/api/embed") >= 1)  # the worker sits in a hung request ...
        assert await timed_saves(client, 5, "more {i}") < SAVE_BOUND  # ... and saves are still answered

        async def stored() -> bool:
            return bool(await fetchval(database_url, "SELECT count(*) FROM messages") == 10)

        await wait_until(stored)  # written by the writer, which does not wait for Ollama either
        # All of that while the worker's one request hung: no answer, no time-out, no second request.
        assert fake.request_count("/api/embed") == 1 and await fetchval(database_url, EMBEDDED) == 0
        fake.set_delay(0, "/api/embed")
        fake.stop()  # Ollama restarted: the hung request's connection is cut, the retry succeeds
        fake.start()
        await wait_embedded(database_url, 10)
        await client.close()


async def test_a_hung_request_is_given_up_after_embed_timeout(bridge: Bridge, fake: FakeOllama,
                                                              database_url: str) -> None:
    await wait_ready(bridge)
    fake.set_delay(60, "/api/embed")
    fake.reset_counters()
    client = await connect(bridge)
    await client.save_message("user", "saved while Ollama hangs")
    await wait_until(lambda: fake.request_count("/api/embed") >= 1)
    fake.set_delay(0, "/api/embed")  # the fake never answers the hung request: only the worker's time-out ends it
    await wait_embedded(database_url, 1, timeout=bridge.settings.embed_timeout + 10)
    assert fake.request_count("/api/embed") >= 2  # the retry after the time-out
    await client.close()


async def test_a_model_with_the_wrong_dimension_keeps_messages_unembedded(
        bridge: Bridge, fake: FakeOllama, database_url: str) -> None:
    await wait_ready(bridge)
    fake.set_dim(384)
    client = await connect(bridge)
    message_id = await client.save_message("user", "the wrong model answers 384 numbers")
    await wait_until(lambda: worker(bridge).status == "blocked")
    error = worker(bridge).last_error or ""
    assert "384" in error and "768" in error and "OSCBRIDGE_EMBED_MODEL" in error
    assert (await status(client))["ollama_up"] == 0
    hits = await client.context_search("wrong model")  # still found, by keyword
    assert hits[0].id == message_id and hits[0].why == "keyword+recent"
    assert await fetchval(database_url, "SELECT embedding IS NULL FROM messages WHERE id = $1", message_id)
    fake.set_dim(768)  # fixed: the worker's next retry embeds it
    await wait_embedded(database_url, 1)
    await client.close()


class PoisonTransport(httpx.AsyncBaseTransport):
    """Passes requests to the fake, except that any batch containing "POISON" gets Ollama's NaN error."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.poisoned = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if b"POISON" in request.content:
            self.poisoned += 1
            return httpx.Response(500, json={"error": "failed to encode response: json: unsupported value: NaN"})
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_one_bad_text_does_not_stall_the_others(bridge: Bridge, fake: FakeOllama, database_url: str) -> None:
    await wait_ready(bridge)
    poison = PoisonTransport()
    w = worker(bridge)
    await w.documents.close()
    w.documents = OllamaClient(fake.url, w.model, w.dim, 2.0, transport=poison)
    fake.reset_counters()
    client = await connect(bridge)
    # Saved while the worker is busy, so that they land in one batch.
    fake.set_delay(0.3, "/api/embed")
    await client.save_message("user", "warm-up")
    await wait_until(lambda: fake.request_count("/api/embed") >= 1)
    for i in range(15):
        await client.save_message("user", "POISON in here" if i == 6 else f"good text {i}")
    fake.set_delay(0, "/api/embed")
    await wait_embedded(database_url, 15)
    bad = await fetchval(database_url, "SELECT id::text FROM messages WHERE content LIKE 'POISON%'")
    assert await fetchval(database_url, "SELECT embedding IS NULL FROM messages WHERE id = $1", bad)
    assert bad in w.parked
    assert poison.poisoned <= 6  # bisection: about log2(batch) refused requests, not one per message
    assert w.status == "up"
    await client.close()


async def test_embed_zero_is_never_embedded(bridge: Bridge, fake: FakeOllama, database_url: str) -> None:
    client = await connect(bridge)
    await client.save_message("system", "You are Soundsmith, a mixing assistant", embed=False)
    await client.save_message("user", "hello there")
    await wait_embedded(database_url, 1)
    await client.close()
    assert not any("Soundsmith" in text for text in fake.all_inputs)
    assert await fetchval(database_url, "SELECT count(*) FROM messages WHERE embedding IS NULL") == 1


async def test_a_new_dimension_changes_an_empty_column(tmp_path: Path, database_url: str, fake: FakeOllama) -> None:
    fake.set_dim(384)
    async with running(memory_settings(tmp_path, database_url, fake, embed_dim=384)) as bridge:
        await wait_ready(bridge)
        client = await connect(bridge)
        message_id = await client.save_message("user", "kick drum at 384 dimensions")
        await wait_embedded(database_url, 1)
        hits = await client.context_search("kick drum")
        assert hits[0].id == message_id and hits[0].why.startswith("semantic")
        await client.close()
    assert await fetchval(database_url, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                                        "WHERE attrelid = 'messages'::regclass AND attname = 'embedding'") == \
        "vector(384)"
    index = await fetchval(database_url, "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_messages_embedding'")
    assert "hnsw" in index and "vector_cosine_ops" in index
    assert await fetchval(database_url, "SELECT count(*) FROM recent_messages") == 1  # the view is back


async def test_a_new_dimension_is_refused_while_embeddings_exist(tmp_path: Path, database_url: str,
                                                                 fake: FakeOllama) -> None:
    async with running(memory_settings(tmp_path, database_url, fake)) as bridge:
        client = await connect(bridge)
        await client.save_message("user", "embedded at 768")
        await wait_embedded(database_url, 1)
        await client.close()
    fake.set_dim(384)
    async with running(memory_settings(tmp_path, database_url, fake, embed_dim=384)) as bridge:
        w = worker(bridge)
        await wait_until(lambda: w.last_error is not None)
        assert not w.schema_ok
        assert "does not drop stored embeddings" in (w.last_error or "")
        assert "vector(768)" in (w.last_error or "") and "UPDATE messages SET embedding = NULL" in (
            w.last_error or "")
        client = await connect(bridge)
        message_id = await client.save_message("user", "kept although it cannot be embedded")
        hits = await client.context_search("kept embedded")
        assert message_id in [h.id for h in hits] and all("semantic" not in h.reasons for h in hits)
        await wait_until(lambda: w.status == "up")  # Ollama itself is fine: /bridge/status says so
        await client.close()
    assert await fetchval(database_url, "SELECT count(*) FROM messages") == 2
    assert await fetchval(database_url, EMBEDDED) == 1


async def test_another_model_recomputes_the_embeddings(tmp_path: Path, database_url: str,
                                                       fake: FakeOllama) -> None:
    fake.set_models(["nomic-embed-text:latest", "mxbai-embed-large:latest"])
    async with running(memory_settings(tmp_path, database_url, fake)) as bridge:
        client = await connect(bridge)
        await client.save_message("user", "first model")
        await wait_embedded(database_url, 1)
        await client.close()
    fake.reset_counters()
    async with running(memory_settings(tmp_path, database_url, fake, embed_model="mxbai-embed-large")):
        async def recomputed() -> bool:
            return bool(await fetchval(database_url, "SELECT embedding_model = 'mxbai-embed-large' AND embedding "
                                                     "IS NOT NULL FROM messages"))

        await wait_until(recomputed)
    assert (fake.last_body or {}).get("model") == "mxbai-embed-large"
