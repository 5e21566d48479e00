"""Hybrid context search: the right messages come first, each row says why, the project scopes it, old key
decisions drop out, and it still answers (without its semantic part) when Ollama is down or hangs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pgvector.asyncpg import register_vector

from oscbridge.app import Bridge
from oscbridge.client import BridgeClient
from oscbridge.memory import search
from oscbridge.memory.client import ContextHit
from oscbridge.memory.search import RRF_K, WEIGHTS, HybridSearch, keyword_query
from oscbridge.store.writer import OpKind
from oscbridge.store.writes import MessageSave
from oscbridge.tools.fake_ollama import FakeOllama, fake_embedding
from tests.memory_support import fetchval, memory_settings, running, wait_embedded, wait_ready, worker

QUERY = "How should we compress the kick drum?"
FILLERS = [
    "Bounce the stems for the mastering engineer tonight",
    "Set the session tempo to 92 BPM and add a count-in",
    "Rename track 7 to Backing Vocals",
    "The chorus needs a wider stereo image on the pads",
    "Add a high-pass filter at 80 Hz to the acoustic guitar",
    "Lower the hi-hat by one decibel in the second verse",
    "Send the rough mix to the band by email",
    "Turn off the metronome for the overdubs",
    "Reference the mix against the album from last year",
    "Check the master bus for clipping before export",
    "Mute the scratch vocal on track 12",
    "Save a new alternative with the piano louder",
]


class Corpus:
    """Message ids by role in the scenario."""

    target = ""  # the message the query is about (old: not among the recent ones)
    related = ""  # shares some of the query's words
    decision = ""  # a key decision, unrelated to the query
    newest = ""


@pytest.fixture
async def bridge(tmp_path: Path, database_url: str, fake: FakeOllama) -> AsyncIterator[Bridge]:
    async with running(memory_settings(tmp_path, database_url, fake)) as b:
        yield b


@pytest.fixture
async def client(bridge: Bridge) -> AsyncIterator[BridgeClient]:
    c = await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp")
    yield c
    await c.close()


@pytest.fixture
async def corpus(client: BridgeClient, bridge: Bridge, database_url: str) -> Corpus:
    c = Corpus()
    c.target = await client.save_message(
        "assistant", "Compress the kick drum with a 4:1 ratio and a slow attack so the transient punches through")
    await client.save_message("user", "Automate the vocal reverb send in the chorus")
    c.decision = await client.save_message("assistant", "Cut 300 Hz on the bass guitar to remove the mud",
                                           key_decision=True, decision_summary="bass -3 dB @ 300 Hz")
    c.related = await client.save_message("user", "The kick drum still sounds thin, maybe layer a sample under it")
    for text in FILLERS:
        c.newest = await client.save_message("user", text)
    await wait_embedded(database_url, 4 + len(FILLERS))
    await wait_ready(bridge)
    return c


class QueryEmbeds:
    """Counts the query embeddings the worker asks Ollama for (each still goes to Ollama): a search that does not
    try is seen as such, not guessed from how long it took."""

    def __init__(self, bridge: Bridge, monkeypatch: pytest.MonkeyPatch) -> None:
        self.asked = 0
        queries = worker(bridge).queries
        embed = queries.embed_query

        async def counted(text: str) -> list[float]:
            self.asked += 1
            return await embed(text)

        monkeypatch.setattr(queries, "embed_query", counted)


def slack(bridge: Bridge) -> float:
    """How long a search may take when its query embedding fails: `query_embed_timeout` and two seconds for a
    loaded machine, far below the 30 s of the hung Ollama in these tests."""
    return bridge.settings.query_embed_timeout + 2.0


def ids(hits: list[ContextHit]) -> list[str]:
    return [h.id for h in hits]


def by_id(hits: list[ContextHit]) -> dict[str, ContextHit]:
    return {h.id: h for h in hits}


async def test_the_messages_the_query_is_about_come_first(client: BridgeClient, corpus: Corpus) -> None:
    hits = await client.context_search(QUERY, limit=20)
    assert ids(hits)[:2] == [corpus.target, corpus.related]
    assert hits[0].why == hits[1].why == "semantic+keyword"
    # Reciprocal rank fusion, k=60: first in both query-driven lists.
    assert hits[0].score == pytest.approx((WEIGHTS[0] + WEIGHTS[1]) / (RRF_K + 1), rel=1e-5)
    found = by_id(hits)
    assert found[corpus.newest].why.endswith("recent")
    assert "decision" in found[corpus.decision].why.split("+")
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert len(hits) == len(set(ids(hits))) == 4 + len(FILLERS)  # every message once, none repeated


async def test_limit_caps_the_fused_list(client: BridgeClient, corpus: Corpus) -> None:
    hits = await client.context_search(QUERY, limit=3)
    assert len(hits) == 3 and ids(hits)[:2] == [corpus.target, corpus.related]


async def test_without_ollama_it_answers_from_keywords_recency_and_decisions(
        client: BridgeClient, corpus: Corpus, fake: FakeOllama, bridge: Bridge, database_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    embeds = QueryEmbeds(bridge, monkeypatch)
    fake.stop()
    for tries in (1, 0):  # the first search finds Ollama gone, the second does not even try
        asked = embeds.asked
        started = time.perf_counter()
        hits = await client.context_search(QUERY)
        assert time.perf_counter() - started < slack(bridge)
        assert embeds.asked - asked == tries
        assert ids(hits)[:2] == [corpus.target, corpus.related]
        assert all("semantic" not in h.reasons for h in hits)
        assert by_id(hits)[corpus.target].why == "keyword"
        assert "decision" in by_id(hits)[corpus.decision].reasons
    assert worker(bridge).status == "down"

    fake.start()  # the worker notices on its own and semantic search comes back
    await wait_ready(bridge)
    hits = await client.context_search(QUERY)
    assert hits[0].why == "semantic+keyword"


async def test_a_hanging_ollama_costs_at_most_the_query_timeout(
        client: BridgeClient, corpus: Corpus, fake: FakeOllama, bridge: Bridge,
        monkeypatch: pytest.MonkeyPatch) -> None:
    embeds = QueryEmbeds(bridge, monkeypatch)
    fake.set_delay(30, "/api/embed")
    started = time.perf_counter()
    hits = await client.context_search(QUERY)
    assert time.perf_counter() - started < slack(bridge)  # the query's time-out, not the 30 s hang
    assert embeds.asked == 1 and not worker(bridge).semantic_ready()
    assert hits[0].id == corpus.target and hits[0].why == "keyword"
    started = time.perf_counter()
    hits = await client.context_search(QUERY)
    assert time.perf_counter() - started < slack(bridge)
    assert embeds.asked == 1  # known down now: no second wait
    assert hits[0].id == corpus.target and hits[0].why == "keyword"


async def test_search_stays_in_the_current_project(client: BridgeClient, corpus: Corpus,
                                                   database_url: str) -> None:
    await client.call("/bridge/project/open", "Other Song", "")
    other = await client.save_message("user", "Compress the kick drum in this song too")
    await wait_embedded(database_url, 5 + len(FILLERS))
    assert ids(await client.context_search(QUERY)) == [other]
    assert [m.id for m in await client.recent_messages(50)] == [other]
    await client.call("/bridge/project/open", "Default Project", "")
    assert other not in ids(await client.context_search(QUERY))


async def test_key_decisions_older_than_seven_days_drop_out(client: BridgeClient, corpus: Corpus,
                                                            database_url: str) -> None:
    await fetchval(database_url, "UPDATE messages SET created_at = now() - interval '8 days' WHERE id = $1",
                   corpus.decision)
    hits = await client.context_search(QUERY)
    assert "decision" not in by_id(hits)[corpus.decision].reasons
    await fetchval(database_url, "UPDATE messages SET created_at = now() - interval '6 days' WHERE id = $1",
                   corpus.decision)
    assert "decision" in by_id(await client.context_search(QUERY))[corpus.decision].reasons


async def test_an_empty_query_gives_recent_messages_and_decisions(client: BridgeClient, corpus: Corpus) -> None:
    hits = await client.context_search("", limit=50)
    assert hits[0].id == corpus.newest and hits[0].why == "recent"
    assert {h.why for h in hits} <= {"recent", "decision", "recent+decision"}
    assert corpus.target not in ids(hits)


async def test_a_message_saved_just_before_is_found(client: BridgeClient, corpus: Corpus, bridge: Bridge,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Read-your-writes: the search waits for the writer (slowed down here) to commit the message first."""
    writer = bridge.writer
    kind = writer.kinds[MessageSave.KIND]

    async def slow_apply(conn: Any, ops: list[MessageSave]) -> None:
        await asyncio.sleep(0.3)
        await kind.apply(conn, ops)

    monkeypatch.setitem(writer.kinds, MessageSave.KIND, OpKind(MessageSave, slow_apply))
    fresh = await client.save_message("user", "xylophone glissando on the bridge section")
    hits = await client.context_search("xylophone glissando")  # not embedded yet, but committed and keyword-found
    assert hits[0].id == fresh and "keyword" in hits[0].reasons
    assert (await client.recent_messages(1))[0].id == fresh


async def test_operators_and_quotes_in_a_query_are_just_words(client: BridgeClient, corpus: Corpus) -> None:
    for query in ["it's O'Brien's \\ 'kick' & | ! ( ) <-> :* drum", "'\\'", "&&& !!! ||", "a:b c:*", "<->"]:
        await client.context_search(query)  # no error reply
    hits = await client.context_search("'kick' & !drum | ")
    assert hits[0].id in (corpus.target, corpus.related) and "keyword" in hits[0].reasons


def test_common_words_are_left_out_of_the_keyword_query() -> None:
    assert keyword_query([("kick", 10.0), ("mix", 50_000.0), ("drum", 0.0)]) == ("'drum' | 'kick'", True)
    assert keyword_query([("mix", 50_000.0), ("track", 20_000.0)]) == ("'mix' & 'track'", False)
    assert keyword_query([("rare", 600.0), ("rarer", 500.0)]) == ("'rarer'", True)  # within the row budget
    assert keyword_query([]) == (None, False)
    assert keyword_query([("o'brien\\", 0.0)]) == ("'o''brien\\\\'", True)


async def test_common_words_rank_by_the_statistics_of_the_table(
        client: BridgeClient, corpus: Corpus, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await fetchval(database_url, "ANALYZE messages")
    monkeypatch.setattr(search, "KEYWORD_ROWS", 1)  # "mix" (two messages) now counts as a common word
    mixes = [h for h in await client.context_search("mix xylophone", limit=50) if "keyword" in h.reasons]
    assert mixes == []  # the rare word is searched alone; it is in no message
    hits = [h for h in await client.context_search("mix", limit=50) if "keyword" in h.reasons]
    assert [h.content for h in hits] == ["Reference the mix against the album from last year",
                                         "Send the rough mix to the band by email"]  # all words common: newest first


async def test_large_projects_search_through_the_hnsw_index(
        client: BridgeClient, corpus: Corpus, bridge: Bridge, database_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Small projects are sorted exactly; from ANN_MIN_ROWS messages on, the planner is steered to the index."""
    await fetchval(database_url, "ANALYZE messages")
    engine = HybridSearch(bridge.settings.hnsw_ef_search)
    project_id = (await client.call("/bridge/project/current"))[1]
    conn = await asyncpg.connect(database_url)
    try:
        await register_vector(conn)
        vector = fake_embedding(QUERY)
        small = "\n".join(await engine.explain_semantic(conn, project_id, vector, 10))
        assert "idx_messages_embedding" not in small
        monkeypatch.setattr(search, "ANN_MIN_ROWS", 1)
        large = "\n".join(await engine.explain_semantic(conn, project_id, vector, 10))
        assert "Index Scan using idx_messages_embedding" in large
    finally:
        await conn.close()
    hits = await client.context_search(QUERY)
    assert ids(hits)[:2] == [corpus.target, corpus.related] and hits[0].why == "semantic+keyword"
