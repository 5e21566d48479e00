"""`oscbridge export` of a project with three sessions made through a running bridge: the JSON Lines files match
the database row for row, the Markdown has one file per session with its messages in order and the track mapping
of that session, tricky text keeps tables whole and reads back as written; and the command's errors, defaults,
file modes, and the embedded database whether the bridge runs or not."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from oscbridge.app import Bridge
from oscbridge.client import BridgeClient
from oscbridge.store.embedded import running_url
from oscbridge.store.schema import apply_schema
from oscbridge.tools.export import FORMATS, ExportError, export
from oscbridge.tools.export_markdown import tracks_during
from oscbridge.tools.fake_ollama import FakeOllama
from tests.conftest import EmbeddedServer, free_port, make_settings, run_cli
from tests.memory_support import fetch, memory_settings, running, wait_embedded

# Text that Markdown would take for structure, and characters that break naive line splitting.
TRICKY = ("# not a heading\n"
          "| a | b |\n|---|---|\n"
          "```python\nprint('unclosed fence')\n"
          "> not a quote, *not bold*, _not italic_, snake_case stays, ~~not struck~~, $x$ not math\n"
          "1. not a list\n- nor this\n+ nor this\n"
          "    indented, not code\n"
          "<script>alert(1)</script> &amp; [a link](http://x) ![img](y) \\ backslash\n"
          "\n"
          "a paragraph after a blank line: 🥁 שלום café Ω \u2028line separator\u2029paragraph separator\x85NEL\n"
          "an escape \x1b[31mred\x1b[0m and a trailing backslash\\")
TRACK_NAME = "Bass | sub `x`"
SUMMARY = "cut 300 Hz | bass `EQ`\n# keep it"
STATE = {"tracks": [{"number": 1, "name": "Kick ```", "volume_db": -6.5}], "note": "pipes | and `ticks`"}


@dataclass
class Session:
    id: str
    messages: list[str] = field(default_factory=list)  # ids, in the order saved
    conversation: list[str] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)  # messages and conversation lines, in the order made


@dataclass
class Scenario:
    project_id: str
    sessions: list[Session]
    texts: dict[str, str]  # message or conversation id -> its text


@pytest.fixture
async def bridge(tmp_path: Path, database_url: str, fake: FakeOllama) -> AsyncIterator[Bridge]:
    async with running(memory_settings(tmp_path, database_url, fake)) as b:
        yield b


@pytest.fixture
async def tcp(bridge: Bridge) -> AsyncIterator[BridgeClient]:
    c = await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp")
    yield c
    await c.close()


async def open_project(client: BridgeClient, name: str) -> str:
    _, session_id = await client.call("/bridge/project/open", name, f"/Users/me/{name}.logicx")
    return str(session_id)


async def make_history(client: BridgeClient) -> Scenario:
    """Song: three sessions, with Other opened in between (so each return to Song starts a new session)."""
    texts: dict[str, str] = {}
    sessions: list[Session] = []

    async def say(session: Session, role: str, text: str, **kwargs: Any) -> None:
        message_id = await client.save_message(role, text, **kwargs)
        session.messages.append(message_id)
        session.timeline.append(message_id)
        texts[message_id] = text

    async def log(session: Session, role: str, text: str, display_type: str = "chat") -> None:
        row_id = await client.log_conversation(role, text, display_type)
        session.conversation.append(row_id)
        session.timeline.append(row_id)
        texts[row_id] = text

    first = Session(await open_project(client, "Song"))
    sessions.append(first)
    for number, name, plugin in ((1, "Kick", "TR1"), (2, "Snare", "TR2"), (3, TRACK_NAME, "TR3")):
        await client.call("/bridge/mapping/set", number, name, plugin)
    await say(first, "user", "Make the kick punchier")
    await log(first, "producer", "Working on the kick", "status")
    await say(first, "assistant", "Raised the kick by 2 dB at 60 Hz", model="claude-sonnet-4.5", key_decision=True,
              decision_summary="kick +2 dB @ 60 Hz")
    await client.create_snapshot("drums balanced", "before the bass", STATE)

    await open_project(client, "Other")
    await client.save_message("user", "a message of another project")

    second = Session(await open_project(client, "Song"))
    sessions.append(second)
    await client.call("/bridge/mapping/set", 1, "Kick 2", "TR1")
    await client.call("/bridge/mapping/set", 4, "Vox <lead> & co", "TR4")
    await log(second, "user", "Now the bass | and `EQ`")
    await say(second, "assistant", TRICKY, model="qwen | `7b`", key_decision=True, decision_summary=SUMMARY)
    await say(second, "system", "Session resumed", embed=False)

    await open_project(client, "Other")
    third = Session(await open_project(client, "Song"))
    sessions.append(third)
    await client.call("/bridge/mapping/clear")
    await client.call("/bridge/mapping/set", 1, "Kick", "TR1")
    await say(third, "user", "Final check: the mix is done ✅")
    await client.create_snapshot("final | mix", "the `last` one\n# done", {"ticks": "````"})

    await client.recent_messages(1)  # read-your-writes: everything accepted before is committed now
    project_id = str((await client.call("/bridge/project/current"))[1])
    return Scenario(project_id, sessions, texts)


# -- JSON Lines --------------------------------------------------------------------------------------------------

# file: (table, the column that selects the project's rows, the column the rows are in order of)
TABLES = {"project.jsonl": ("projects", "id", "id"), "sessions.jsonl": ("sessions", "project_id", "started_at"),
          "messages.jsonl": ("messages", "project_id", "created_at"),
          "conversation.jsonl": ("mission_control_conversations", "project_id", "created_at"),
          "snapshots.jsonl": ("context_snapshots", "project_id", "created_at"),
          "tracks.jsonl": ("track_assignments", "project_id", "assigned_at")}
LEFT_OUT = {"projects": {"deleted_at"}, "messages": {"embedding", "embedded_at", "content_tsv"}}


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    lines = path.read_text(encoding="utf-8").splitlines()  # Unicode line breaks too: a record must stay one line
    return [json.loads(line) for line in lines]


def same(db: Any, exported: Any) -> bool:
    """A database value and its JSON form: uuid as text, timestamptz as ISO-8601 in UTC, jsonb as JSON."""
    if isinstance(db, uuid.UUID):
        return bool(exported == str(db))
    if isinstance(db, datetime):
        return isinstance(exported, str) and exported.endswith("+00:00") and datetime.fromisoformat(exported) == db
    if isinstance(db, list):
        return isinstance(exported, list) and len(db) == len(exported) and all(
            same(a, b) for a, b in zip(db, exported, strict=True))
    return bool(db == exported) and type(db) is type(exported)


async def test_jsonl_matches_the_database_row_for_row(tmp_path: Path, tcp: BridgeClient, bridge: Bridge,
                                                      database_url: str) -> None:
    scenario = await make_history(tcp)
    await wait_embedded(database_url, 4)  # vectors exist, and are left out of the export
    done = await export(bridge.settings, "Song", tmp_path / "out", FORMATS)
    assert done.counts == {"project.jsonl": 1, "sessions.jsonl": 3, "messages.jsonl": 5, "conversation.jsonl": 2,
                           "snapshots.jsonl": 2, "tracks.jsonl": 6}

    conn = await asyncpg.connect(database_url)
    try:
        await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
        for file, (table, key, order) in TABLES.items():
            records = await conn.fetch(f"SELECT * FROM {table} WHERE {key} = $1", scenario.project_id)
            db_rows = {str(r["id"]): r for r in records}
            exported = read_jsonl(tmp_path / "out" / file)
            assert [row["id"] for row in exported] == [str(r["id"]) for r in sorted(
                records, key=lambda r: (r[order], str(r["id"])))], file
            assert len(exported) == len(db_rows) > 0, file
            for row in exported:
                record = db_rows[row["id"]]
                assert set(row) == set(record.keys()) - LEFT_OUT.get(table, set()), file
                unequal = {k: (record[k], v) for k, v in row.items() if not same(record[k], v)}
                assert unequal == {}, (file, unequal)
    finally:
        await conn.close()

    sessions = read_jsonl(tmp_path / "out" / "sessions.jsonl")
    assert [s["id"] for s in sessions] == [s.id for s in scenario.sessions]
    assert [s["is_active"] for s in sessions] == [False, False, True] and sessions[2]["ended_at"] is None
    tricky = next(m for m in read_jsonl(tmp_path / "out" / "messages.jsonl") if m["content"] == TRICKY)
    assert (tricky["model"], tricky["decision_summary"], tricky["is_key_decision"]) == ("qwen | `7b`", SUMMARY, True)
    snapshot = read_jsonl(tmp_path / "out" / "snapshots.jsonl")[0]
    assert snapshot["track_state"] == STATE and snapshot["message_ids"] == scenario.sessions[0].messages
    raw = (tmp_path / "out" / "messages.jsonl").read_text(encoding="utf-8")
    assert "🥁 שלום café" in raw and "\\u2028" in raw and "\u2028" not in raw  # readable, one record per line
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["project"] == {"id": scenario.project_id, "name": "Song"}
    assert manifest["counts"]["messages.jsonl"] == 5 and manifest["schema_version"] >= 1


# -- Markdown ----------------------------------------------------------------------------------------------------

_ESCAPE = re.compile(r"\\([!-/:-@\[-`{-~])")


def unescape(text: str) -> str:
    """What a CommonMark renderer shows for escaped text: backslash escapes undone, no-break indentation as
    spaces."""
    return _ESCAPE.sub(r"\1", text).replace("\u00a0", " ")


def rendered_block(lines: list[str]) -> str:
    """The text of Markdown lines written by the exporter: hard breaks (an odd trailing backslash) removed."""
    out = []
    for line in lines:
        trailing = len(line) - len(line.rstrip("\\"))
        out.append(unescape(line[:-1] if trailing % 2 else line))
    return "\n".join(out)


def as_shown(text: str) -> str:
    """`text` as the Markdown should show it: control characters as their pictures (ESC as ␛), Unicode line
    breaks as line breaks."""
    return text.replace("\x1b", "\u241b").replace("\x85", "\n").replace("\u2028", "\n").replace("\u2029", "\n")


def split_row(line: str) -> list[str]:
    """The cells of a GitHub table row, split where GitHub splits them (on pipes not escaped)."""
    assert line.startswith("| ") and line.endswith(" |"), line
    cells: list[str] = []
    cell, body, i = "", line[1:-1], 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            cell, i = cell + body[i:i + 2], i + 2
        elif body[i] == "|":
            cells, cell, i = [*cells, cell.strip()], "", i + 1
        else:
            cell, i = cell + body[i], i + 1
    return [*cells, cell.strip()]


def section(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(f"## {title}") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start:end]


def track_table(text: str) -> list[tuple[int, str, str, bool, bool]]:
    """(track, name, plugin, made in this session, ended in this session) per row of the Tracks table."""
    rows = [line for line in section(text, "Tracks") if line.startswith("|")]
    assert rows[0] == "| Track | Name | Plugin | Since | Until |" and rows[1] == "|---|---|---|---|---|"
    table = []
    for row in rows[2:]:
        cells = split_row(row)
        assert len(cells) == 5, row
        table.append((int(cells[0]), unescape(cells[1]).replace("<br>", "\n"), unescape(cells[2]),
                      cells[3].endswith("(this session)"), cells[4] != ""))
    return table


def conversation(text: str) -> list[tuple[str, str]]:
    """(header, text) per entry of the Conversation section, in order."""
    entries: list[tuple[str, list[str]]] = []
    for line in section(text, "Conversation"):
        if line.startswith("**"):
            entries.append((line, []))
        elif entries:
            entries[-1][1].append(line)
    out = []
    for header, body in entries:
        while body and (not body[0] or body[0].startswith(">")):
            body.pop(0)  # the blank line after the header, the decision's quote
        while body and not body[-1]:
            body.pop()
        out.append((header, rendered_block(body)))
    return out


async def test_markdown_has_a_file_per_session_with_its_messages_and_tracks(tmp_path: Path, tcp: BridgeClient,
                                                                           bridge: Bridge) -> None:
    scenario = await make_history(tcp)
    done = await export(bridge.settings, "Song", tmp_path / "out", ["markdown"])
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["index.md", "manifest.json", "sessions"]
    starts = {str(s["id"]): s["started_at"] for s in await fetch(bridge.settings.database_url or "",
                                                                  "SELECT id, started_at FROM sessions")}
    names = [f"{starts[s.id]:%Y-%m-%d_%H%M}_{s.id[:8]}.md" for s in scenario.sessions]
    assert sorted(p.name for p in (out / "sessions").iterdir()) == sorted(names)
    assert done.files == [*(f"sessions/{n}" for n in names), "index.md", "manifest.json"]

    pages = [(out / "sessions" / name).read_text(encoding="utf-8") for name in names]
    for page, session in zip(pages, scenario.sessions, strict=True):
        assert page.startswith("# Song: session of ") and f"Session id {session.id}" in page
        entries = conversation(page)
        assert [text for _, text in entries] == [as_shown(scenario.texts[i]) for i in session.timeline]
    headers = [header for header, _ in conversation(pages[0])]
    assert headers[0].endswith(" · user**") and "Mission Control · producer** · status" in headers[1]
    assert headers[2].endswith("· assistant** · claude-sonnet-4.5 · ⭐ key decision")
    assert "> **Decision:** kick +2 dB @ 60 Hz" in pages[0] and "- " in section(pages[0], "Key decisions")[1]
    assert "a message of another project" not in "".join(pages)

    assert track_table(pages[0]) == [(1, "Kick", "TR1", True, False), (2, "Snare", "TR2", True, False),
                                     (3, TRACK_NAME, "TR3", True, False)]
    assert track_table(pages[1]) == [(1, "Kick", "TR1", False, True), (1, "Kick 2", "TR1", True, False),
                                     (2, "Snare", "TR2", False, False), (3, TRACK_NAME, "TR3", False, False),
                                     (4, "Vox <lead> & co", "TR4", True, False)]
    assert track_table(pages[2]) == [(1, "Kick 2", "TR1", False, True), (1, "Kick", "TR1", True, False),
                                     (2, "Snare", "TR2", False, True), (3, TRACK_NAME, "TR3", False, True),
                                     (4, "Vox <lead> & co", "TR4", False, True)]

    snapshots = section(pages[0], "Snapshots")
    assert snapshots[1] == "### drums balanced" and "before the bass" in snapshots
    assert [line.split(" · ", 1)[1] for line in snapshots if line.startswith("- ")] == [
        "user: Make the kick punchier", "assistant: Raised the kick by 2 dB at 60 Hz"]
    fence = snapshots.index("````json")  # longer than the three backticks in the state
    assert json.loads("\n".join(snapshots[fence + 1:snapshots.index("````", fence + 1)])) == STATE
    last = section(pages[2], "Snapshots")
    assert last[1] == "### final \\| mix"
    taken = next(i for i, line in enumerate(last) if line.startswith("Taken at "))
    assert rendered_block(last[taken + 2:taken + 4]) == "the `last` one\n# done"
    assert last[last.index("Track state:") + 2] == "`````json"  # longer than the state's four backticks

    index = (out / "index.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(sessions/([^)]+)\)", index)
    assert links == names and "Logic project: /Users/me/Song.logicx" in index
    rows = [split_row(line) for line in section(index, "Sessions") if line.startswith("| [")]
    assert [r[2:] for r in rows] == [["2", "1", "1", "1"], ["2", "1", "0", "1"], ["1", "0", "1", "0"]]
    assert [r[1] == "not ended" for r in rows] == [False, False, True]
    now = [split_row(line) for line in section(index, "Tracks now") if line.startswith("| 1 ")]
    assert [cells[:3] for cells in now] == [["1", "Kick", "TR1"]]


def test_the_mapping_of_a_session_is_what_was_in_effect_at_some_time_during_it() -> None:
    """The boundaries: a mapping retired exactly when a session starts was not in effect in it; one made exactly
    when it ends was (for an instant); one retired after its end counts as still in place."""
    t = [datetime(2026, 11, 30, 14, minute, tzinfo=UTC) for minute in range(10)]

    def row(name: str, assigned: datetime, retired: datetime | None) -> dict[str, Any]:
        return {"id": name, "track_number": 1, "track_name": name, "assigned_at": assigned, "retired_at": retired}

    rows = [row("gone before", t[0], t[2]), row("retired at start", t[1], t[3]), row("during", t[3], t[5]),
            row("across", t[2], t[8]), row("made at end", t[6], None), row("after", t[7], None)]
    assert [r["id"] for r in tracks_during(rows, t[3], t[6])] == ["across", "during", "made at end"]
    assert [r["id"] for r in tracks_during(rows, t[8], t[9])] == ["made at end", "after"]


async def test_tricky_text_keeps_the_page_structure(tmp_path: Path, tcp: BridgeClient, bridge: Bridge) -> None:
    """Nothing a message says becomes structure: headings, tables, fences, quotes and lists of the page are the
    exporter's only, and the message reads back as written."""
    await open_project(tcp, "Song")
    await tcp.call("/bridge/mapping/set", 1, "a | b\nc `d` # e", "TR1")
    message_id = await tcp.save_message("user", TRICKY, key_decision=True, decision_summary=SUMMARY)
    await tcp.recent_messages(1)
    await export(bridge.settings, "Song", tmp_path / "out", ["markdown"])
    (page_file,) = (tmp_path / "out" / "sessions").iterdir()
    page = page_file.read_text(encoding="utf-8")
    lines = page.splitlines()

    assert [line for line in lines if line.startswith("#")] == [lines[0], "## Tracks", "## Key decisions",
                                                                "## Conversation"]
    assert [line for line in lines if line.startswith("|")] == [
        "| Track | Name | Plugin | Since | Until |", "|---|---|---|---|---|",
        next(line for line in lines if line.startswith("| 1 |"))]
    assert track_table(page)[0][1] == "a | b\nc `d` # e"
    # In the conversation, the only block structure is the decision's quote.
    conversation_lines = section(page, "Conversation")
    blocks = [line for line in conversation_lines if re.match(r"```|~~~| {4}|[-+*] |\d+[.)] |<|\||>", line)]
    quote = [line for line in lines if line.startswith(">")]
    assert blocks == quote
    assert len(quote) == 2 and rendered_block([q.removeprefix("> ") for q in quote]) == "**Decision:** " + SUMMARY
    ((header, text),) = conversation(page)
    assert text == as_shown(TRICKY) and "\x1b" not in page and header.endswith("· user** · ⭐ key decision")
    assert section(page, "Key decisions")[1].endswith(": cut 300 Hz \\| bass \\`EQ\\` # keep it")
    assert [m.id for m in await tcp.recent_messages(1)] == [message_id]


# -- the command -------------------------------------------------------------------------------------------------


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


async def test_cli_defaults_refusals_and_file_modes(tmp_path: Path, tcp: BridgeClient, bridge: Bridge,
                                                    database_url: str) -> None:
    await make_history(tcp)
    base = ["export", "--database-url", database_url]
    work = tmp_path / "work"
    work.mkdir()

    done = await asyncio.to_thread(run_cli, *base, cwd=work)  # the project opened last, into <project>-<date>
    assert done.returncode == 0, done.stderr
    (out,) = work.iterdir()
    assert re.fullmatch(r"Song-\d{4}-\d{2}-\d{2}", out.name) and f"to {out}" in done.stdout
    assert ("3 sessions, 5 messages, 2 Mission Control lines, 2 snapshots, 6 track assignments (11 files)"
            in done.stdout)
    found = modes(out)
    assert {m for name, m in found.items() if (out / name).is_dir()} == {0o700}
    assert {m for name, m in found.items() if (out / name).is_file()} == {0o600}
    assert len([n for n in found if n.endswith(".jsonl")]) == 6 and len(found) == 1 + 6 + 1 + 1 + 1 + 3

    again = await asyncio.to_thread(run_cli, *base, cwd=work)
    assert again.returncode == 1 and "is not empty" in again.stderr and "--force" in again.stderr
    (out / "notes.txt").write_text("mine")
    os.chmod(out / "index.md", 0o644)
    forced = await asyncio.to_thread(run_cli, *base, "--force", "--format", "markdown", cwd=work)
    assert forced.returncode == 0, forced.stderr
    assert (out / "notes.txt").read_text() == "mine" and stat.S_IMODE((out / "index.md").stat().st_mode) == 0o600

    unknown = await asyncio.to_thread(run_cli, *base, "--project", "Nope", "--out", str(tmp_path / "x"))
    assert unknown.returncode == 1 and "no project named 'Nope'" in unknown.stderr
    assert "'Default Project', 'Other', 'Song'" in unknown.stderr and not (tmp_path / "x").exists()
    a_file = tmp_path / "file"
    a_file.write_text("")
    not_dir = await asyncio.to_thread(run_cli, *base, "--out", str(a_file))
    assert not_dir.returncode == 1 and "is not a directory" in not_dir.stderr
    bad = await asyncio.to_thread(run_cli, *base, "--format", "jsonl,pdf")
    assert bad.returncode == 2 and "unknown format pdf" in bad.stderr

    jsonl_only = tmp_path / "jsonl"
    only = await asyncio.to_thread(run_cli, *base, "--project", "Other", "--format", "jsonl", "--out",
                                   str(jsonl_only))
    assert only.returncode == 0, only.stderr
    assert sorted(p.name for p in jsonl_only.iterdir()) == sorted([*TABLES, "manifest.json"])
    assert [m["content"] for m in read_jsonl(jsonl_only / "messages.jsonl")] == ["a message of another project"]


async def test_an_unreachable_database_or_none_at_all_is_a_clear_error(tmp_path: Path, pg: EmbeddedServer,
                                                                      database_url: str) -> None:
    url = f"postgresql://postgres:secret@127.0.0.1:{free_port()}/oscbridge"
    down = await asyncio.to_thread(run_cli, "export", "--database-url", url, "--out", str(tmp_path / "a"))
    assert down.returncode == 1 and "cannot reach the database at" in down.stderr
    assert "secret" not in down.stderr and "Traceback" not in down.stderr

    empty = await asyncio.to_thread(run_cli, "export", "--database-url", await pg.new_database(), "--out",
                                    str(tmp_path / "b"))
    assert empty.returncode == 1 and "no oscbridge database" in empty.stderr and not (tmp_path / "b").exists()
    conn = await asyncpg.connect(database_url)
    try:
        await apply_schema(conn)
    finally:
        await conn.close()
    with pytest.raises(ExportError, match="holds no project yet"):
        await export(make_settings(tmp_path, database_url), None, tmp_path / "b", FORMATS)

    settings = make_settings(tmp_path, None)
    with pytest.raises(ExportError, match="has not run with this data dir"):
        await export(settings, None, tmp_path / "c", FORMATS)
    assert not settings.embedded_pgdata.exists()  # reading started no server and made no database


async def test_the_embedded_database_with_the_bridge_running_or_not(tmp_path: Path) -> None:
    """The default setup: no URL. While the bridge runs the export uses its server; afterwards it starts the
    server itself, reads, and stops it again."""
    settings = make_settings(tmp_path, None)
    args = ["export", "--data-dir", str(settings.data_dir), "--format", "jsonl"]
    async with running(settings) as bridge:
        client = await BridgeClient.connect("127.0.0.1", bridge.port, transport="tcp")
        try:
            await open_project(client, "Live")
            await client.save_message("user", "while the bridge runs", embed=False)
            await client.recent_messages(1)
        finally:
            await client.close()
        live = await asyncio.to_thread(run_cli, *args, "--out", str(tmp_path / "live"))
        assert live.returncode == 0, live.stderr
    assert running_url(settings.embedded_pgdata) is None
    stopped = await asyncio.to_thread(run_cli, *args, "--project", "Live", "--out", str(tmp_path / "stopped"))
    assert stopped.returncode == 0, stopped.stderr
    assert running_url(settings.embedded_pgdata) is None  # the server it started is stopped again
    for name in ("live", "stopped"):
        assert [m["content"] for m in read_jsonl(tmp_path / name / "messages.jsonl")] == ["while the bridge runs"]
