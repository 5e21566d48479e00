"""Keeping `messages.embedding` at the dimension the settings ask for, or saying why it cannot be changed.

schema.sql creates the column as vector(768) (nomic-embed-text). Another embedding model needs another
dimension, which is a schema change. The bridge makes it itself only when nothing can be lost: while the column
holds no embedding at all, it drops the HNSW index (and the view that reads the table), changes the type, and
makes both again from their definitions as the database holds them. When embeddings are stored it refuses and
explains how to switch deliberately; until then messages are kept without embeddings and search works without its
semantic part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from oscbridge.store.schema import SCHEMA_LOCK_KEY

_VECTOR_TYPE = re.compile(r"vector\((\d+)\)")
# What stands on messages.embedding, as SQL to drop it and to make it again: the views that read the table and the
# indexes on the column (identifiers from the catalog, quoted by format()).
_DEPENDENTS = """
SELECT format('DROP VIEW %s', v.oid::regclass) AS drop_sql,
       format('CREATE VIEW %s AS %s', v.oid::regclass, pg_get_viewdef(v.oid)) AS create_sql,
       CASE WHEN obj_description(v.oid, 'pg_class') IS NOT NULL
            THEN format('COMMENT ON VIEW %s IS %L', v.oid::regclass, obj_description(v.oid, 'pg_class')) END
           AS comment_sql
FROM pg_class v JOIN pg_depend d ON d.refobjid = 'messages'::regclass AND d.classid = 'pg_rewrite'::regclass
JOIN pg_rewrite r ON r.oid = d.objid AND r.ev_class = v.oid
WHERE v.relkind = 'v' AND v.oid <> 'messages'::regclass
GROUP BY v.oid
UNION ALL
SELECT format('DROP INDEX %s', i.indexrelid::regclass), pg_get_indexdef(i.indexrelid),
       CASE WHEN obj_description(i.indexrelid, 'pg_class') IS NOT NULL
            THEN format('COMMENT ON INDEX %s IS %L', i.indexrelid::regclass, obj_description(i.indexrelid, 'pg_class'))
       END
FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE i.indrelid = 'messages'::regclass AND a.attname = 'embedding'
"""


@dataclass(frozen=True)
class DimensionCheck:
    """`ok`: the column has the wanted dimension (now); `changed`: it was altered just now; `message`: for
    the log and the doctor when it is not ok."""

    ok: bool
    column_dim: int | None
    wanted: int
    changed: bool = False
    message: str | None = None


async def column_dimension(conn: asyncpg.Connection) -> int | None:
    """The n of `messages.embedding vector(n)`, or None when the column has no fixed dimension."""
    declared = await conn.fetchval(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = 'messages'::regclass AND attname = 'embedding' AND NOT attisdropped"
    )
    match = _VECTOR_TYPE.fullmatch(declared or "")
    return int(match.group(1)) if match else None


def refusal(column_dim: int | None, wanted: int) -> str:
    return (
        f"messages.embedding is vector({column_dim}) and already holds embeddings, but the settings ask for "
        f"{wanted} dimensions (OSCBRIDGE_EMBED_DIM / embed_dim). oscbridge does not drop stored embeddings on its "
        f"own. Either set embed_dim back to {column_dim}, or switch for good: clear them with "
        "`psql \"$(oscbridge db url)\" -c 'UPDATE messages SET embedding = NULL, embedded_at = NULL'` and restart; "
        f"the bridge then changes the column to vector({wanted}), rebuilds its HNSW index and embeds every message "
        "again. Until then messages are stored without embeddings and context search answers from keywords, "
        "recency and key decisions."
    )


async def ensure_dimension(conn: asyncpg.Connection, wanted: int) -> DimensionCheck:
    """Compares the column with `wanted` and changes it when that is safe (see the module docstring)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)
        current = await column_dimension(conn)
        if current == wanted:
            return DimensionCheck(True, current, wanted)
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM messages WHERE embedding IS NOT NULL)"):
            return DimensionCheck(False, current, wanted, message=refusal(current, wanted))
        # The view that reads the column and the HNSW index on it must go for the type to change; they come back
        # as the schema defines them now (their definitions are read from the database, not repeated here).
        dependents = await conn.fetch(_DEPENDENTS)
        for row in dependents:
            await conn.execute(row["drop_sql"])
        # DDL takes no parameters; `wanted` is an int checked by Settings.validate (1..2000).
        await conn.execute(f"ALTER TABLE messages ALTER COLUMN embedding TYPE vector({int(wanted)})")
        for row in reversed(dependents):
            await conn.execute(row["create_sql"])
            if row["comment_sql"]:
                await conn.execute(row["comment_sql"])
    return DimensionCheck(True, wanted, wanted, changed=True,
                          message=f"messages.embedding changed from vector({current}) to vector({wanted}) "
                                  "(it held no embeddings); its HNSW index was rebuilt")
