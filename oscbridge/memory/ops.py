"""Write kinds of the conversation memory: LLM messages, Mission Control conversation rows, context snapshots.

All three are append-only rows with ids made by the bridge, so each applier is one idempotent COPY through the
writer's staging table (`copy_idempotent`): a spool replay after a crash never duplicates a row. Embeddings are
not written here; the embedding worker fills them in later (they can always be recomputed from the text).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from oscbridge.store.writer import OpKind, copy_idempotent, ts_to_dt
from oscbridge.store.writes import ConversationRow, MessageSave, SnapshotCreate

MESSAGE_COLUMNS = ("id", "project_id", "session_id", "role", "content", "model", "is_key_decision",
                   "decision_summary", "embedding_model", "created_at")
CONVERSATION_COLUMNS = ("id", "project_id", "session_id", "role", "content", "display_type", "created_at")
SNAPSHOT_COLUMNS = ("id", "project_id", "session_id", "name", "description", "message_ids", "track_state",
                    "created_at")


async def _apply_messages(conn: asyncpg.Connection, ops: list[MessageSave]) -> None:
    """`embedding_model` is the model that is to embed the message, or NULL when it is not to be embedded."""
    records = [
        (op.id, op.project_id, op.session_id, op.role, op.content, op.model,
         op.key_decision, op.decision_summary, op.embedding_model, ts_to_dt(op.ts))
        for op in ops
    ]
    await copy_idempotent(conn, "messages", MESSAGE_COLUMNS, records)


async def _apply_conversations(conn: asyncpg.Connection, ops: list[ConversationRow]) -> None:
    records = [
        (op.id, op.project_id, op.session_id, op.role, op.content, op.display_type,
         ts_to_dt(op.ts))
        for op in ops
    ]
    await copy_idempotent(conn, "mission_control_conversations", CONVERSATION_COLUMNS, records)


async def _apply_snapshots(conn: asyncpg.Connection, ops: list[SnapshotCreate]) -> None:
    records = [
        (op.id, op.project_id, op.session_id, op.name, op.description, op.message_ids,
         op.track_state, ts_to_dt(op.ts))
        for op in ops
    ]
    await copy_idempotent(conn, "context_snapshots", SNAPSHOT_COLUMNS, records)


MEMORY_OPS: tuple[OpKind[Any], ...] = (
    OpKind(MessageSave, _apply_messages),
    OpKind(ConversationRow, _apply_conversations),
    OpKind(SnapshotCreate, _apply_snapshots),
)
