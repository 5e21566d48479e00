"""The embedding backfill worker: fills `messages.embedding` from Ollama, off the request path.

`/bridge/message/save` only spools the message; this task embeds it afterwards. It finds its work in the
database (`embedding IS NULL` for rows that are to be embedded), never in memory, so messages saved while
Ollama was down, slow or misconfigured, or before a restart, are embedded as soon as it can be done.

How it treats Ollama:

* one request in flight at a time (batches of `embed_batch_size` texts, each cut to the model's context);
* Ollama unreachable, timing out, 429 or 502-504: an outage. The worker backs off exponentially
  (0.5 s doubling up to `embed_retry_max`, with jitter) and ignores wake-ups while it waits, so a burst of
  saves cannot make it hammer a struggling Ollama;
* the model missing or answering with another dimension: blocked. It says so in the log (and in
  `last_error`), keeps the messages unembedded, and retries at the same capped pace in case someone fixes it;
* any other refusal of a batch (an HTTP 400/500 or a malformed answer) may come from one bad text: after
  checking that Ollama still embeds a known-good text, the batch is bisected, and a text that fails on its own
  is parked for ten minutes (logged with its message id) so that it cannot stall the rest.

At start it checks the column's dimension against the settings (see `dimension.py`) and, once the configured
model is seen to work, clears embeddings made by another model so they are computed again with this one (vectors
of two models do not live in the same space). Embeddings are written directly, not through the spool: they are
derived data that the worker can always recompute.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Literal

import asyncpg

from oscbridge.backoff import Backoff
from oscbridge.config import ConfigError, Settings
from oscbridge.embed import (
    MAX_INPUT_CHARS,
    DimensionMismatch,
    OllamaClient,
    OllamaError,
    OllamaModelMissing,
)
from oscbridge.logs import get_logger
from oscbridge.memory.dimension import ensure_dimension
from oscbridge.store.db import CONNECTION_ERRORS, Database
from oscbridge.store.writer import Writer
from oscbridge.tasks import cancel_and_wait

log = get_logger("oscbridge.memory.worker")

Status = Literal["unknown", "up", "down", "blocked"]

BACKOFF_BASE = 0.5
IDLE_POLL = 5.0  # seconds between looks at the database when nothing woke the worker (spool replays, restarts)
HEALTH_INTERVAL = 30.0  # while idle and up, re-check Ollama this often so /bridge/status stays honest
PARK_SECONDS = 600.0
COMMIT_WAIT = 5.0
# Seconds between exact counts of a backlog larger than one batch (`memory.backlog`); between counts the number
# goes down by what was embedded. One count walks the pending-messages index: cheap, but not worth once a batch.
BACKLOG_RECOUNT = 2.0
OUTAGE_STATUSES = frozenset({429, 502, 503, 504})
PROBE_TEXT = "oscbridge embedding probe"

_FETCH = """
SELECT id::text AS id, left(content, $3) AS content
FROM messages
WHERE embedding IS NULL AND embedding_model IS NOT NULL AND NOT (id = ANY($2::uuid[]))
ORDER BY created_at
LIMIT $1
"""
_COUNT = "SELECT count(*) FROM messages WHERE embedding IS NULL AND embedding_model IS NOT NULL"
_STORE = """
UPDATE messages SET embedding = $2, embedding_model = $3, embedded_at = now()
WHERE id = $1 AND embedding IS NULL
"""
_RETARGET = """
UPDATE messages SET embedding = NULL, embedded_at = NULL
WHERE embedding IS NOT NULL AND embedding_model IS DISTINCT FROM $1
"""


def classify(exc: OllamaError) -> Status | Literal["refused"]:
    """What an Ollama error means for the worker: an outage, a block a human must lift, or a refused batch."""
    if isinstance(exc, DimensionMismatch | OllamaModelMissing):
        return "blocked"
    if exc.retryable and (exc.status is None or exc.status in OUTAGE_STATUSES):
        return "down"
    return "refused"


class EmbeddingWorker:
    """One background task per bridge. `status` is what Ollama looks like from here (`/bridge/status` reads `up`)."""

    def __init__(self, settings: Settings, db: Database, writer: Writer) -> None:
        self._db = db
        self._writer = writer
        self.model = settings.embed_model
        self.dim = settings.embed_dim
        try:
            self.documents = OllamaClient(settings.ollama_url, settings.embed_model, settings.embed_dim,
                                          settings.embed_timeout, batch_size=settings.embed_batch_size)
            self.queries = OllamaClient(settings.ollama_url, settings.embed_model, settings.embed_dim,
                                        settings.query_embed_timeout)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.batch_size = settings.embed_batch_size
        self.status: Status = "unknown"
        self.last_error: str | None = None
        self.schema_ok = False
        self.retargeted = False
        self.embedded = 0
        # Messages waiting for an embedding: counted at each look at the database, plus those saved since (while
        # Ollama is down the worker may not look for a minute; `oscbridge status` shows this number).
        self.backlog = 0
        self.parked: dict[str, float] = {}
        self._next_count = 0.0
        self._backoff = Backoff(BACKOFF_BASE, settings.embed_retry_max, jitter=True)
        self._next_health = 0.0
        self._seq = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- used by the request handlers ------------------------------------------------------------------------

    def notify(self, seq: int) -> None:
        """A message to embed was spooled as write `seq`: look for work once it is committed."""
        self._seq = max(self._seq, seq)
        self.backlog += 1
        self._wake.set()

    def stats(self) -> dict[str, int]:
        return {"memory.embedded": self.embedded, "memory.parked": len(self.parked), "memory.backlog": self.backlog}

    def up(self) -> bool:
        """Whether Ollama answered the last time it was asked (`/bridge/status`)."""
        return self.status == "up"

    def semantic_ready(self) -> bool:
        """Whether a search should try to embed its query (not while Ollama is known to be down or blocked)."""
        return self.schema_ok and self.retargeted and self.status == "up"

    async def embed_query(self, text: str) -> list[float] | None:
        """The query's vector, or None at once when it cannot be had within `query_embed_timeout`."""
        if not text.strip() or not self.semantic_ready():
            return None
        try:
            return await self.queries.embed_query(text)
        except OllamaError as exc:
            kind = classify(exc)
            if kind == "refused":
                log.warning("query_embedding_refused", error=str(exc)[:300])
            else:
                self._set_status(kind, exc)
                self._wake.set()  # let the worker take over checking when Ollama is back
            return None
        except RuntimeError:  # the client was closed: the bridge is stopping
            return None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="oscbridge-embedding-worker")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        await self.documents.close()
        await self.queries.close()

    # -- the task --------------------------------------------------------------------------------------------

    async def _run(self) -> None:
        await self._prepare()
        while True:
            try:
                await self._step()
            except CONNECTION_ERRORS as exc:
                log.debug("embedding_worker_waits_for_database", error=str(exc)[:200])
                await self._pause()
            except Exception as exc:  # a bug or an unexpected database answer must not end the backfill
                log.exception("embedding_worker_failed", error=str(exc)[:300])
                await self._pause()

    async def _prepare(self) -> None:
        """Checks (and, when safe, changes) the column's dimension; waits for the database if needed."""
        while True:
            try:
                async with self._db.acquire() as conn:
                    check = await ensure_dimension(conn, self.dim)
                break
            except CONNECTION_ERRORS:
                await self._pause()
            except asyncpg.PostgresError as exc:
                self.last_error = f"cannot check or change messages.embedding: {exc}"
                log.error("embedding_dimension_check_failed", error=self.last_error)
                return
        self._backoff.reset()
        self.schema_ok = check.ok
        if check.changed:
            log.warning("embedding_dimension_changed", detail=check.message)
        elif not check.ok:
            self.last_error = check.message
            log.error("embedding_dimension_refused", detail=check.message)

    async def _step(self) -> None:
        """One turn: embed a batch if there is one, else make sure of Ollama's health, else wait for work."""
        if not self.schema_ok:  # nothing can be stored; only keep /bridge/status honest
            await self._check_health()
            await asyncio.sleep(HEALTH_INTERVAL)
            return
        self._wake.clear()
        if self.status == "up" and not self.retargeted:
            await self._retarget()
        await self._writer.wait_committed(self._seq, COMMIT_WAIT)
        rows = await self._fetch()
        if rows:
            if await self._embed(rows):
                self._backoff.reset()
            else:
                await self._pause()
            return
        if self.status != "up" or time.monotonic() >= self._next_health:
            if not await self._check_health():
                await self._pause()
                return
            self._backoff.reset()
            if not self.retargeted:
                return  # retarget first, then look for work again
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), IDLE_POLL)

    async def _pause(self) -> None:
        """Capped exponential backoff with jitter; wake-ups are ignored meanwhile (no hammering)."""
        await asyncio.sleep(self._backoff.next())

    async def _fetch(self) -> list[tuple[str, str]]:
        now = time.monotonic()
        self.parked = {key: until for key, until in self.parked.items() if until > now}
        async with self._db.acquire() as conn:
            rows = await conn.fetch(_FETCH, self.batch_size, list(self.parked), MAX_INPUT_CHARS)
            if len(rows) < self.batch_size:  # every pending message that is not parked is in this batch
                self.backlog = len(rows) + len(self.parked)
            elif now >= self._next_count:
                self.backlog = await conn.fetchval(_COUNT)
                self._next_count = now + BACKLOG_RECOUNT
        return [(r["id"], r["content"]) for r in rows]

    async def _embed(self, rows: list[tuple[str, str]], probed: bool = False) -> bool:
        """Embeds and stores `rows`; False when Ollama is down or blocked (the caller backs off)."""
        try:
            vectors = await self.documents.embed_documents([content for _, content in rows])
        except OllamaError as exc:
            kind = classify(exc)
            if kind != "refused":
                self._set_status(kind, exc)
                return False
            return await self._isolate(rows, exc, probed)
        async with self._db.acquire() as conn:
            await conn.executemany(_STORE, [(key, vector, self.model) for (key, _), vector in zip(rows, vectors,
                                                                                                  strict=True)])
        self.embedded += len(rows)
        self.backlog = max(0, self.backlog - len(rows))
        self._set_status("up")
        return True

    async def _isolate(self, rows: list[tuple[str, str]], exc: OllamaError, probed: bool) -> bool:
        """Ollama refused a batch: find the text(s) it cannot embed by bisection, if Ollama itself still works."""
        if len(rows) == 1:
            key = rows[0][0]
            self.parked[key] = time.monotonic() + PARK_SECONDS
            log.error("message_not_embeddable", message_id=key, error=str(exc)[:300],
                      retry_in_seconds=PARK_SECONDS, hint="the message is stored; only its embedding is missing")
            return True
        if not probed:
            try:
                await self.documents.embed_documents([PROBE_TEXT])
            except OllamaError as probe_exc:
                kind = classify(probe_exc)
                self._set_status("down" if kind == "refused" else kind, probe_exc)
                return False
        middle = len(rows) // 2
        return await self._embed(rows[:middle], True) and await self._embed(rows[middle:], True)

    async def _check_health(self) -> bool:
        health = await self.documents.health()
        self._next_health = time.monotonic() + HEALTH_INTERVAL
        if health.ok:
            self._set_status("up")
        elif not health.reachable:
            self._set_status("down", health.error)
        elif not health.model_present or health.dim not in (None, self.dim):
            self._set_status("blocked", health.error)
        else:
            self._set_status("down", health.error)
        return health.ok

    async def _retarget(self) -> None:
        """Clears embeddings of another model (once per start, after this model was seen to work)."""
        async with self._db.acquire() as conn:
            result = await conn.execute(_RETARGET, self.model)
        self.retargeted = True
        cleared = int(result.split()[-1])
        if cleared:
            log.warning("embedding_model_changed", model=self.model, cleared=cleared,
                        detail="embeddings of another model were cleared and are being recomputed")

    def _set_status(self, status: Status, error: OllamaError | str | None = None) -> None:
        text = None if error is None else str(error)
        changed = status != self.status or (text is not None and text != self.last_error)
        self.status = status
        if status == "up":
            if changed:
                log.info("ollama_up", url=self.documents.url, model=self.model)
            if self.schema_ok:  # a refused dimension change stays the reason nothing is embedded
                self.last_error = None
            return
        self.last_error = text
        if not changed:
            return
        if status == "blocked":
            log.error("embedding_blocked", error=text,
                      detail="messages are kept without embeddings and embedded once this is fixed")
        else:
            log.warning("ollama_down", error=text,
                        detail="messages are kept and embedded when Ollama is back; search works without "
                               "its semantic part meanwhile")
