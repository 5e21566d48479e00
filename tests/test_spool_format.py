"""The spool's format is defined by the write types (store/writes.py) and versioned; a spool written by the first
release of the bridge (format 1, tests/data/spool_v1, one write of every kind, made by commit 5b65d06 with the
database down) replays into PostgreSQL whole."""

from __future__ import annotations

import dataclasses
import json
import shutil
import uuid
from pathlib import Path

import asyncpg
import pytest

from oscbridge.projects import project_id_for
from oscbridge.store.writes import (
    SPOOL_FORMAT,
    WRITE_TYPES,
    BridgeStart,
    DebugRow,
    MappingSet,
    SessionStart,
    UnreadableWrite,
    decode,
    encode,
)
from tests.conftest import make_settings, running

V1 = Path(__file__).parent / "data" / "spool_v1" / "writes.jsonl"


def v1_entries() -> list[dict[str, object]]:
    return [json.loads(line) for line in V1.read_text().splitlines()]


# Write kinds made after the first release, which a v1 spool cannot hold.
NEWER_KINDS = {BridgeStart.KIND}


def test_the_v1_spool_holds_every_kind_and_reads_as_typed_writes() -> None:
    ops = [decode(entry) for entry in v1_entries()]
    assert {op.KIND for op in ops} == set(WRITE_TYPES) - NEWER_KINDS
    start = next(op for op in ops if isinstance(op, SessionStart) and op.name == "Spool Song")
    assert start.logic_path == "/Music/Spool Song.logicx" and start.project_id == project_id_for("Spool Song")
    row = next(op for op in ops if isinstance(op, DebugRow) and op.content == "hello from v1")
    assert row.severity == "info" and row.parent_id is None and json.loads(row.payload or "") == {"n": 1}


def test_every_write_type_survives_the_round_trip() -> None:
    for op in [*(decode(entry) for entry in v1_entries()), BridgeStart(str(uuid.uuid4()), "Rig", "mac", "0.1.0", 1.0)]:
        entry = encode(op)
        assert entry["v"] == SPOOL_FORMAT
        assert decode(json.loads(json.dumps(entry))) == op


@pytest.mark.parametrize(("entry", "words"), [
    ({"v": SPOOL_FORMAT + 1, "k": "mapping_clear", "d": {}}, "newer"),
    ({"k": "mapping_frobnicate", "d": {}}, "unknown write kind"),
    ({"k": "mapping_clear", "d": []}, "not an object"),
    ({"k": "mapping_set", "d": {"id": "x"}}, "lacks a field"),
    ([1, 2], "not a JSON object"),
])
def test_entries_that_are_not_writes_are_refused_with_a_reason(entry: object, words: str) -> None:
    with pytest.raises(UnreadableWrite, match=words):
        decode(entry)


def test_a_field_added_later_must_have_a_default_so_older_lines_still_read() -> None:
    """Format 1 wrote these fields; a new required field would make the v1 spool unreadable."""
    written_by_v1 = {str(entry["k"]): set(entry["d"]) for entry in v1_entries()}  # type: ignore[call-overload]
    for kind, fields in written_by_v1.items():
        required = {f.name for f in dataclasses.fields(WRITE_TYPES[kind])
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        assert required <= fields, f"{kind} requires {required - fields}, which a v1 spool does not have"


async def test_a_spool_left_by_the_first_release_is_applied_at_start(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(tmp_path, database_url)
    spool_dir = settings.spool_dir
    spool_dir.mkdir(parents=True)
    shutil.copy(V1, spool_dir / "writes.jsonl")
    async with running(settings) as bridge:
        assert await bridge.writer.flush(10.0)
        assert not (spool_dir / "rejected.jsonl").exists() or not (spool_dir / "rejected.jsonl").read_text()
    conn = await asyncpg.connect(database_url)
    try:
        song = project_id_for("Spool Song")
        assert await conn.fetchval("SELECT logic_project_path FROM projects WHERE id = $1", song) == \
            "/Music/Spool Song.logicx"
        current = await conn.fetch("SELECT track_number, track_name, plugin_id FROM track_assignments "
                                   "WHERE project_id = $1 AND is_current", song)
        assert [tuple(r) for r in current] == [(3, "Bass", "TR3")]  # TR1 and TR2 were cleared after being set
        assert await conn.fetchval("SELECT count(*) FROM track_assignments WHERE project_id = $1", song) == 3
        assert await conn.fetchval("SELECT payload FROM mission_control_debug WHERE content = 'hello from v1'") == \
            '{"n": 1}'
        message = await conn.fetchrow("SELECT is_key_decision, decision_summary FROM messages "
                                      "WHERE content = 'Cut 300 Hz on the bass'")
        assert message is not None and tuple(message) == (True, "cut 300 Hz")
        assert await conn.fetchval("SELECT count(*) FROM mission_control_conversations WHERE content = "
                                   "'louder please'") == 1
        assert await conn.fetchval("SELECT cardinality(message_ids) FROM context_snapshots WHERE name = "
                                   "'before mixdown'") == 1
        assert await conn.fetchval("SELECT state FROM plugin_instances") == "bound"
        assert await conn.fetchval("SELECT reason FROM port_quarantine") == "in use by another process"
    finally:
        await conn.close()


def test_mapping_set_lines_of_v1_are_typed_mapping_sets() -> None:
    sets = [decode(e) for e in v1_entries() if e["k"] == MappingSet.KIND]
    assert [(op.track_number, op.plugin_id) for op in sets if isinstance(op, MappingSet)] == \
        [(1, "TR1"), (2, "TR2"), (3, "TR3")]
