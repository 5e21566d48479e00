"""The memory requests end to end over real UDP and TCP: save, recent, search, conversation log, snapshots, bad
input and the size limits (20 kB over TCP, `too_large` over UDP, 1 MiB accepted, more refused)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from oscbridge.api.memory import MAX_CONTENT
from oscbridge.app import Bridge
from oscbridge.client import BridgeClient, BridgeRequestError
from oscbridge.tools.fake_ollama import FakeOllama
from tests.memory_support import fetch, fetchval, memory_settings, running, wait_embedded, wait_ready


@pytest.fixture
async def bridge(tmp_path: Path, database_url: str, fake: FakeOllama) -> AsyncIterator[Bridge]:
    async with running(memory_settings(tmp_path, database_url, fake)) as b:
        yield b


@pytest.fixture
async def tcp(bridge: Bridge) -> AsyncIterator[BridgeClient]:
    c = await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp")
    yield c
    await c.close()


async def expect_error(code: str, call: object, *words: str) -> str:
    with pytest.raises(BridgeRequestError) as info:
        await call  # type: ignore[misc]
    assert info.value.code == code, info.value
    for word in words:
        assert word in info.value.message, info.value.message
    return info.value.message


async def test_save_then_recent_newest_first(client: BridgeClient, database_url: str) -> None:
    first = await client.save_message("user", "Make the kick punchier")
    second = await client.save_message("assistant", "Raised the kick by 2 dB at 60 Hz", model="claude-sonnet-4.5",
                                       key_decision=True, decision_summary="kick +2 dB @ 60 Hz")
    third = await client.save_message("system", "Session resumed", embed=False)
    assert len({first, second, third}) == 3

    recent = await client.recent_messages(2)
    assert [m.id for m in recent] == [third, second]
    assert (recent[1].role, recent[1].content, recent[1].model, recent[1].key_decision) == (
        "assistant", "Raised the kick by 2 dB at 60 Hz", "claude-sonnet-4.5", True)
    assert recent[0].model == "" and not recent[0].key_decision
    assert recent[0].created_at > recent[1].created_at  # ISO-8601 in UTC sorts as text
    assert recent[0].created_at.endswith("+00:00")
    assert [m.id for m in await client.recent_messages(50)] == [third, second, first]

    row = (await fetch(database_url, "SELECT model, decision_summary, embedding_model FROM messages WHERE id = $1",
                       second))[0]
    assert dict(row) == {"model": "claude-sonnet-4.5", "decision_summary": "kick +2 dB @ 60 Hz",
                         "embedding_model": "nomic-embed-text"}
    # embed 0: stored without an embedding model, so the worker never embeds it; "" is stored as NULL.
    row = (await fetch(database_url, "SELECT model, decision_summary, embedding_model FROM messages WHERE id = $1",
                       third))[0]
    assert dict(row) == {"model": None, "decision_summary": None, "embedding_model": None}


async def test_context_search_over_each_transport(client: BridgeClient, bridge: Bridge, database_url: str) -> None:
    wanted = await client.save_message("user", "Compress the snare with a fast attack and slow release")
    await client.save_message("assistant", "The bass guitar sits well under the vocal now")
    await wait_embedded(database_url, 2)
    await wait_ready(bridge)
    hits = await client.context_search("snare compression attack", limit=5)
    assert hits[0].id == wanted
    assert hits[0].reasons == ("semantic", "keyword", "recent")
    assert hits[0].score > hits[1].score > 0
    assert all(h.created_at.endswith("+00:00") for h in hits)


async def test_conversation_log_and_snapshot(client: BridgeClient, database_url: str) -> None:
    await expect_error("bad_request", client.create_snapshot("too early"), "nothing to snapshot")
    ids = [await client.save_message("user", "Let's start with the drums"),
           await client.save_message("assistant", "Drums are on tracks 1 to 4")]
    conversation_id = await client.log_conversation("producer", "Drums look good", "status")
    state = {"tracks": [{"number": 1, "name": "Kick", "volume_db": -6.5}], "tempo": 92}
    snapshot_id = await client.create_snapshot("drums balanced", "before the bass", state)
    bare_id = await client.create_snapshot("no state")

    await client.recent_messages(1)  # read-your-writes: everything accepted before is committed now
    row = (await fetch(database_url, "SELECT name, description, message_ids::text[] AS ids, track_state::text AS "
                                     "state, session_id::text AS s FROM context_snapshots WHERE id = $1",
                       snapshot_id))[0]
    assert (row["name"], row["description"], row["ids"], json.loads(row["state"])) == (
        "drums balanced", "before the bass", ids, state)
    bare = (await fetch(database_url, "SELECT description, track_state FROM context_snapshots WHERE id = $1",
                        bare_id))[0]
    assert (bare["description"], bare["track_state"]) == (None, None)
    conv = (await fetch(database_url, "SELECT role, content, display_type, session_id::text AS s "
                                      "FROM mission_control_conversations WHERE id = $1", conversation_id))[0]
    assert (conv["role"], conv["content"], conv["display_type"], conv["s"]) == (
        "producer", "Drums look good", "status", row["s"])

    listed = await client.rows("/bridge/snapshot/list")
    assert [(r[0], r[1], r[2], r[4], r[5]) for r in listed] == [
        (bare_id, "no state", "", row["s"], 2), (snapshot_id, "drums balanced", "before the bass", row["s"], 2)]
    assert [r[0] for r in await client.rows("/bridge/snapshot/list", 1)] == [bare_id]


async def test_recent_of_the_current_session_only(client: BridgeClient) -> None:
    await client.save_message("user", "said in the first session")
    await client.call("/bridge/project/open", "Other", "")
    await client.call("/bridge/project/open", "Default Project", "")  # back: a new session of the same project
    await client.save_message("user", "said in the second session")
    assert [r[2] for r in await client.rows("/bridge/message/recent", 10)] == [
        "said in the second session", "said in the first session"]
    assert [r[2] for r in await client.rows("/bridge/message/recent", 10, 1)] == ["said in the second session"]


async def test_bad_input_is_refused_and_nothing_is_written(client: BridgeClient, database_url: str) -> None:
    async def refused(address: str, *args: object, words: tuple[str, ...] = ()) -> None:
        await expect_error("bad_request", client.call(address, *args), *words)

    await refused("/bridge/message/save", "user", "", words=("content", "empty"))
    await refused("/bridge/message/save", "user", " \n\t ", words=("content", "empty"))
    await refused("/bridge/message/save", "robot", "hello", words=("role", "user, assistant"))
    await refused("/bridge/message/save", "user", "hi", "", 2, words=("key_decision",))
    await refused("/bridge/message/save", "user", 42, words=("content", "string"))
    await refused("/bridge/message/save", words=("expected",))
    await refused("/bridge/message/recent", 0, words=("limit",))
    await refused("/bridge/context/search", "x", 1000, words=("limit", "100"))
    await refused("/bridge/conversation/log", "assistant", "hi", "chat", words=("role", "producer"))
    await refused("/bridge/conversation/log", "user", "hi", "popup", words=("display_type",))
    await refused("/bridge/conversation/log", "user", "", "chat", words=("content", "empty"))
    await client.save_message("user", "one message, so that snapshots are possible")
    await refused("/bridge/snapshot/create", "s", "", "{tracks: 1}", words=("track_state", "not valid JSON"))
    await refused("/bridge/snapshot/create", "s", "", '{"gain": NaN}', words=("track_state", "NaN"))
    await refused("/bridge/snapshot/create", "s", "", '{"gain": 1e999}', words=("track_state", "NaN"))
    await refused("/bridge/snapshot/create", "s", "", '{"name": "a\\u0000b"}', words=("track_state", "u0000"))
    await refused("/bridge/snapshot/create", "s", "", '["\\ud800"]', words=("track_state", "surrogate"))
    await refused("/bridge/snapshot/create", "", "", "", words=("name",))

    await client.recent_messages(1)
    counts = await fetch(database_url, "SELECT (SELECT count(*) FROM messages) AS m, (SELECT count(*) FROM "
                                       "context_snapshots) AS s, (SELECT count(*) FROM mission_control_conversations)"
                                       " AS c")
    assert dict(counts[0]) == {"m": 1, "s": 0, "c": 0}


async def test_long_message_over_tcp_and_too_large_over_udp(bridge: Bridge, tcp: BridgeClient,
                                                            database_url: str) -> None:
    long_text = "Mix notes. " + " ".join(f"note{i} the reverb tail on the snare" for i in range(600))
    assert len(long_text) > 20_000
    message_id = await tcp.save_message("assistant", long_text, model="claude-sonnet-4.5")
    (recent,) = await tcp.recent_messages(1)
    assert (recent.id, recent.content) == (message_id, long_text)
    await wait_embedded(database_url, 1)
    await wait_ready(bridge)
    hits = await tcp.context_search("reverb tail")
    assert hits[0].id == message_id and hits[0].content == long_text

    udp = await BridgeClient.connect("127.0.0.1", bridge.port, transport="udp")
    try:
        await expect_error("too_large", udp.recent_messages(1), "TCP")
        await expect_error("too_large", udp.context_search("reverb tail"), "TCP")
        short = await udp.save_message("user", "short one")
        (row,) = await udp.recent_messages(1)  # small replies still fit
        assert row.id == short
    finally:
        await udp.close()


async def test_one_mebibyte_is_accepted_over_tcp_and_more_is_refused(tcp: BridgeClient, database_url: str) -> None:
    # A word near the start is found by keyword; the generated tsvector covers only the first 200 kB of text.
    head = "zanzibarian marimba overdub. "
    tail = " finaleword"
    body = head + "la " * ((MAX_CONTENT - len(head) - len(tail)) // 3)
    text = body + "x" * (MAX_CONTENT - len(body) - len(tail)) + tail
    assert len(text) == MAX_CONTENT
    message_id = await tcp.save_message("assistant", text, timeout=10)
    await expect_error("bad_request", tcp.save_message("assistant", text + "!", timeout=10), "1048576")

    hits = await tcp.context_search("zanzibarian marimba", limit=1, timeout=10)
    assert hits[0].id == message_id and len(hits[0].content) == MAX_CONTENT
    assert await fetchval(database_url, "SELECT length(content) FROM messages WHERE id = $1", message_id) == MAX_CONTENT
    assert await fetchval(database_url, "SELECT content_tsv @@ plainto_tsquery('english', 'finaleword') "
                                        "FROM messages WHERE id = $1", message_id) is False
