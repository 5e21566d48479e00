"""Hybrid context search: four ranked lists of one project's messages, fused by reciprocal rank fusion.

The lists (storage audit 6.4, fixed as its section S3 asks):

* semantic: nearest embeddings by cosine distance through the HNSW index. The index is global, so the project
  filter is applied while scanning; `hnsw.iterative_scan = relaxed_order` makes pgvector keep scanning until
  enough rows of this project were found (without it, ef_search=40 candidates filtered to one project of many
  can leave almost nothing). Relaxed order may return neighbours slightly out of order; the window function
  ranks them by their exact distance again. Skipped when there is no query vector (Ollama down).
* keyword: PostgreSQL full-text search on the generated `content_tsv` (GIN). The query's informative words are
  OR-ed and ranked with `ts_rank_cd`, so a message that holds more of them ranks higher, and a long
  natural-language question still finds messages that share only its rare words (with AND, a ten-word question
  matches almost nothing). Words the planner's statistics expect in very many messages are left out: they say
  little, and ranking thousands of rows would cost tens of milliseconds (`keyword_query`).
* recent: the newest messages of the project (all sessions: resuming a project must see the last session).
* decision: key decisions of the last 7 days, newest first.

Fusion: score = sum over lists of weight / (60 + rank). The query-driven lists weigh 1, the query-independent
ones 0.5, so that what the query asks for comes before what is merely recent, while a message that is both
relevant and recent gains from both. Ties break by newer first, then id, so the order is deterministic. Each
row says why it is there: the names of its lists joined by `+`, in the order above.

Everything runs in one read-only transaction: `SET LOCAL` (through `set_config(..., true)`) keeps the hnsw and
planner settings inside it, because the pool's `RESET ALL` on release would drop session settings anyway
(asyncpg notes). `plan_cache_mode = force_custom_plan` keeps PostgreSQL from switching the prepared statement to a
generic plan that does not know the project and the vector; `HybridSearch._prepare` explains the rest.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

RRF_K = 60
KEYWORD_ROWS = 1000  # messages the keyword list expects to rank at most (see keyword_query)
ANN_MIN_ROWS = 2000  # projects this large search their neighbours through the HNSW index (HybridSearch._prepare)
MAX_TERMS = 16
RECENT = 10
DECISION_DAYS = 7
DECISIONS = 5
WEIGHTS = (1.0, 1.0, 0.5, 0.5)  # semantic, keyword, recent, decision (the `ord` of each list in the SQL)
MIN_DEPTH = 20
MAX_DEPTH = 200


@dataclass(frozen=True)
class Hit:
    id: str
    role: str
    content: str
    created_at: datetime
    score: float
    why: str


# $1 project id, $2 query vector (NULL: no semantic part), $3 how many neighbours. `dist + 0`: with relaxed order
# the index returns neighbours only roughly sorted, and the planner must not take them for sorted (pgvector README).
_SEMANTIC = """
    SELECT id, row_number() OVER (ORDER BY dist + 0, id) AS rank
    FROM (SELECT id, embedding <=> $2 AS dist
          FROM messages
          WHERE project_id = $1 AND embedding IS NOT NULL AND $2::vector IS NOT NULL
          ORDER BY embedding <=> $2
          LIMIT $3) AS nearest
"""

# $4 keyword tsquery (NULL: no keyword part), $5 recent count, $6 decision days, $7 decision count, $8 result
# limit, $9 RRF k, $10 weights. {keyword_order} orders the keyword matches (see `keyword_query`).
_HYBRID = f"""
WITH semantic AS ({_SEMANTIC}),
keyword AS (
    SELECT id, row_number() OVER (ORDER BY r DESC, created_at DESC, id) AS rank
    FROM (SELECT id, created_at, {{keyword_rank}} AS r
          FROM messages
          WHERE project_id = $1 AND $4::tsquery IS NOT NULL AND content_tsv @@ $4::tsquery
          ORDER BY {{keyword_rank}} DESC, created_at DESC, id
          LIMIT $3) AS matched
),
recent AS (
    SELECT id, row_number() OVER (ORDER BY created_at DESC, id DESC) AS rank
    FROM (SELECT id, created_at FROM messages WHERE project_id = $1
          ORDER BY created_at DESC, id DESC LIMIT $5) AS newest
),
decisions AS (
    SELECT id, row_number() OVER (ORDER BY created_at DESC, id DESC) AS rank
    FROM (SELECT id, created_at FROM messages
          WHERE project_id = $1 AND is_key_decision AND created_at >= now() - make_interval(days => $6)
          ORDER BY created_at DESC, id DESC LIMIT $7) AS flagged
),
fused AS (
    SELECT id, sum(($10::float8[])[ord] / ($9 + rank)) AS score, string_agg(src, '+' ORDER BY ord) AS why
    FROM (SELECT id, rank, 1 AS ord, 'semantic' AS src FROM semantic
          UNION ALL SELECT id, rank, 2, 'keyword' FROM keyword
          UNION ALL SELECT id, rank, 3, 'recent' FROM recent
          UNION ALL SELECT id, rank, 4, 'decision' FROM decisions) AS listed
    GROUP BY id
)
SELECT m.id::text AS id, m.role, m.content, m.created_at, f.score, f.why
FROM fused f JOIN messages m ON m.id = f.id
ORDER BY f.score DESC, m.created_at DESC, m.id
LIMIT $8
"""
_HYBRID_RANKED = _HYBRID.format(keyword_rank="ts_rank_cd(content_tsv, $4::tsquery, 1)")
_HYBRID_NEWEST = _HYBRID.format(keyword_rank="0::real")

# What ANALYZE keeps for the planner, used to plan the search (see `TableStats`): the row count, the most common
# lexemes of content_tsv with their frequencies (followed by the least and greatest of them), and the most common
# project ids with theirs.
_STATS = """
SELECT greatest(c.reltuples, 0) AS row_count,
       t.most_common_elems::text::text[] AS lexemes, t.most_common_elem_freqs AS lexeme_freqs,
       p.most_common_vals::text::text[] AS projects, p.most_common_freqs AS project_freqs
FROM pg_class c
LEFT JOIN pg_stats t ON t.schemaname = current_schema() AND t.tablename = 'messages' AND t.attname = 'content_tsv'
LEFT JOIN pg_stats p ON p.schemaname = current_schema() AND p.tablename = 'messages' AND p.attname = 'project_id'
WHERE c.oid = 'messages'::regclass
"""

# Transaction-local settings (see `HybridSearch._prepare`) and the query's lexemes, as the generated column makes
# them, in one round trip.
_PREPARE = """
SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', 'relaxed_order', true),
       set_config('plan_cache_mode', 'force_custom_plan', true), set_config('enable_indexscan', $2, true),
       set_config('enable_seqscan', $3, true), set_config('enable_sort', $3, true),
       tsvector_to_array(to_tsvector('english'::regconfig, left($4, 200000))) AS lexemes
"""

_SEMANTIC_ONLY = f"SELECT id::text AS id FROM ({_SEMANTIC}) AS s WHERE rank <= $4 ORDER BY rank"


def depth(limit: int) -> int:
    """Candidates taken from each ranked list: twice the result size, so fusion has room to reorder."""
    return min(max(2 * limit, MIN_DEPTH), MAX_DEPTH)


def _quote(lexeme: str) -> str:
    """A lexeme as a quoted tsquery operand: nothing in it can act as an operator."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def keyword_query(terms: Sequence[tuple[str, float]]) -> tuple[str | None, bool]:
    """The keyword tsquery for the query's (lexeme, expected matches) and whether to rank by `ts_rank_cd`.

    Ranking costs ~10 us per matching message (each is read from the heap), so the keyword list takes the
    query's rarest words first and stops before the expected matches exceed KEYWORD_ROWS; those words are OR-ed
    and ranked. The words left out are the common ones, which say little about relevance (the semantic list
    still sees them). When even the rarest word is that common, the messages that hold all the words match,
    newest first (cheap: a walk of the project's recency index that stops after `depth` rows)."""
    chosen: list[str] = []
    total = 0.0
    for lexeme, expected in sorted(terms, key=lambda term: (term[1], term[0])):
        if total + expected > KEYWORD_ROWS or len(chosen) == MAX_TERMS:
            break
        chosen.append(lexeme)
        total += expected
    if chosen:
        return " | ".join(_quote(lexeme) for lexeme in chosen), True
    if terms:
        return " & ".join(_quote(lexeme) for lexeme, _ in terms[:MAX_TERMS]), False
    return None, False


@dataclass(frozen=True)
class TableStats:
    """The planner's statistics of `messages`, as the search uses them (all empty before the first ANALYZE).

    `lexemes`: messages expected to hold a lexeme as listed among the most common; `unlisted`: half the least
    common one's count, PostgreSQL's own estimate for a lexeme it did not list. `projects`: messages of each
    project that is among the most common values; a project not listed is small."""

    lexemes: dict[str, float]
    unlisted: float
    projects: dict[str, float]

    def expected(self, lexeme: str) -> float:
        return self.lexemes.get(lexeme, self.unlisted)


class HybridSearch:
    """Runs the search. Keeps the table statistics for `STATS_TTL` seconds: they change only on ANALYZE, and
    reading them costs more than a millisecond."""

    STATS_TTL = 60.0

    def __init__(self, ef_search: int) -> None:
        self.ef_search = ef_search
        self._stats = TableStats({}, 0.0, {})
        self._stats_until = 0.0

    async def _table_stats(self, conn: asyncpg.Connection) -> TableStats:
        if time.monotonic() >= self._stats_until:
            row = await conn.fetchrow(_STATS)
            assert row is not None  # one row: the messages table
            count = float(row["row_count"])
            lexemes, freqs = row["lexemes"] or [], row["lexeme_freqs"] or []
            least = freqs[len(lexemes)] if len(freqs) > len(lexemes) else 0.0
            projects = zip(row["projects"] or [], row["project_freqs"] or [], strict=False)
            self._stats = TableStats({lexeme: f * count for lexeme, f in zip(lexemes, freqs, strict=False)},
                                     least / 2 * count, {project: f * count for project, f in projects})
            self._stats_until = time.monotonic() + self.STATS_TTL
        return self._stats

    async def _prepare(self, conn: asyncpg.Connection, project_id: str, k: int, query: str = "",
                       exact: bool = False) -> tuple[list[str], TableStats]:
        """Sets the transaction-local settings for the semantic list; returns the query's lexemes and the stats.

        The planner misjudges it: the vectors live in TOAST, which its cost model for a scan does not see, and
        pgvector prices an HNSW scan higher as ef_search grows. So on tables of a few tens of thousands of rows it
        picks a scan that reads and compares every vector of the project (70 ms for 20k, measured) over the HNSW
        index (2-4 ms). For a project with at least ANN_MIN_ROWS messages, sequential scans and sorts are turned
        off, which leaves the HNSW index as the only way to the nearest neighbours; a smaller project is left to
        the planner, which sorts it exactly (cheap at that size, and an HNSW scan filtered to a very small share
        of the table would have to wade through many other projects' rows). `exact` (the benchmark's reference)
        turns index scans off instead."""
        stats = await self._table_stats(conn)
        ann = not exact and stats.projects.get(project_id, 0.0) >= ANN_MIN_ROWS
        indexscan, others = ("off", "on") if exact else ("on", "off" if ann else "on")
        lexemes: list[str] = await conn.fetchval(_PREPARE, str(max(self.ef_search, k)), indexscan, others, query,
                                                 column=6)
        return lexemes, stats

    async def run(self, conn: asyncpg.Connection, project_id: str, query: str, vector: Sequence[float] | None,
                  limit: int) -> list[Hit]:
        """The fused context for `query` in one project, best first, at most `limit` rows."""
        k = depth(limit)
        async with conn.transaction(readonly=True):
            lexemes, stats = await self._prepare(conn, project_id, k, query)
            tsquery, ranked = keyword_query([(lexeme, stats.expected(lexeme)) for lexeme in lexemes])
            rows = await conn.fetch(_HYBRID_RANKED if ranked else _HYBRID_NEWEST, project_id, vector, k, tsquery,
                                    RECENT, DECISION_DAYS, DECISIONS, limit, RRF_K, list(WEIGHTS))
        return [Hit(r["id"], r["role"], r["content"], r["created_at"], float(r["score"]), r["why"]) for r in rows]

    async def semantic_ids(self, conn: asyncpg.Connection, project_id: str, vector: Sequence[float], k: int,
                           *, exact: bool = False) -> list[str]:
        """The top `k` of the semantic list as a search with limit `k` builds it (`depth(k)` neighbours, re-ranked
        by exact distance), or by an exact scan (`exact`): the benchmark's recall check."""
        async with conn.transaction(readonly=True):
            await self._prepare(conn, project_id, depth(k), exact=exact)
            rows = await conn.fetch(_SEMANTIC_ONLY, project_id, vector, depth(k), k)
        return [r["id"] for r in rows]

    async def explain_semantic(self, conn: asyncpg.Connection, project_id: str, vector: Sequence[float],
                               k: int) -> list[str]:
        """EXPLAIN ANALYZE of the semantic list as `semantic_ids` runs it: to see which index a search uses."""
        async with conn.transaction(readonly=True):
            await self._prepare(conn, project_id, depth(k))
            rows = await conn.fetch("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + _SEMANTIC_ONLY,
                                    project_id, vector, depth(k), k)
        return [r[0] for r in rows]
