"""Benchmark of /bridge/context/search on 100,000 messages with 768-d vectors in one project among several.

    .venv/bin/python -m bench.bench_context_search [--target 100000] [--others 4] [--per-other 25000]

(from the repository root, after `pip install -e '.[bench]'`)

What it does (numbers only; not a test):

1. Starts an embedded PostgreSQL (pgvector) in a temporary directory and applies schema.sql.
2. Loads the target project (default 100,000 messages) plus `--others` projects of `--per-other` messages each
   (default 4 x 25,000, so the target holds half of the 200,000 rows) with binary COPY, vectors encoded by the
   pgvector codec. The HNSW and GIN indexes are dropped before the load and built after it.
3. Vectors: synthetic but structured like text embeddings of a conversation, not uniform noise: 100 topic
   centres N(0, 1); 10 subtopics per topic (+ N(0, 0.6)); 10 threads per subtopic (+ N(0, 0.4)), i.e. 10,000
   threads of about 10 related messages each in the target project; each message = its thread + noise in an
   8-dimensional subspace (as much variance as N(0, 0.3) in every coordinate), L2-normalised; queries are drawn
   the same way. Real embeddings vary along few directions locally; isotropic noise in all 768 makes the ~10-100
   nearest candidates almost equidistant, which is as hard for HNSW as uniform noise. `--noise-rank 0` and
   `--threads 0` give that harder case (isotropic N(0, 0.3), or N(0, 0.45) around the subtopic). Texts are
   8-24 words from a Zipf-distributed general vocabulary mixed with words of the message's topic, so the
   keyword list has both rare and very common terms to deal with.
4. Runs a bridge in-process (on uvloop, like `oscbridge serve`) whose query embeddings come from a fake Ollama
   (an httpx transport answering /api/embed in Ollama's JSON with the query's vector; the embedding worker talks
   to `oscbridge.tools.fake_ollama` on loopback), and sends the queries over OSC/TCP with limit 10. Reported:
   end-to-end latency, the same minus the time spent in the query embedding (measured inside the bridge), and the
   hybrid SQL alone on a direct connection (the "search part").
5. Recall@10 of the semantic list (HNSW, iterative scan, project filter) against an exact scan of the same
   project (index scans off), for several ef_search values, on the target project and on a 25k project.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from pgvector.asyncpg import register_vector

from bench.common import percentile, run_on_daemon_loop
from oscbridge.app import Bridge
from oscbridge.client import BridgeClient
from oscbridge.config import Settings
from oscbridge.embed import OllamaClient
from oscbridge.logs import configure_logging
from oscbridge.memory.search import HybridSearch
from oscbridge.projects import project_id_for
from oscbridge.store.embedded import EmbeddedPostgres
from oscbridge.store.schema import apply_schema
from oscbridge.tools.fake_ollama import FakeOllama
from oscbridge.tools.ports import free_port

DIM = 768
TOPICS = 100
SUBTOPICS = 10
SUB_SIGMA = 0.6
THREAD_SIGMA = 0.4
NOISE_SIGMA = 0.3
FLAT_NOISE_SIGMA = 0.45
POOL = 4096
CHUNK = 5000
MODEL = "nomic-embed-text"


class Corpus:
    """Deterministic generator of structured vectors and texts (see the module docstring)."""

    def __init__(self, seed: int, threads: int, noise_rank: int) -> None:
        self.rng = random.Random(seed)
        self.threads = threads
        gauss = self.rng.gauss
        topics = [[gauss(0, 1.0) for _ in range(DIM)] for _ in range(TOPICS)]
        self.centres = [[t + gauss(0, SUB_SIGMA) for t in topic] for topic in topics for _ in range(SUBTOPICS)]
        # Gaussian offsets: cyclic shifts of pooled N(0, 1) vectors (shifts of an iid vector are as good as fresh
        # draws for this purpose, and much cheaper in pure Python).
        self.pool = [[gauss(0, 1.0) for _ in range(DIM)] for _ in range(POOL)]
        # Low-rank message noise: unit directions shared by all messages, each weighted so that the total noise
        # variance equals the isotropic noise's (which `noise_rank` 0 uses instead).
        self.basis = [self._unit([gauss(0, 1.0) for _ in range(DIM)]) for _ in range(noise_rank)]
        sigma = NOISE_SIGMA if threads else FLAT_NOISE_SIGMA
        self.noise_weight = sigma * math.sqrt(DIM / noise_rank) if noise_rank else sigma
        syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "do", "fe", "gi", "hu"]
        vocabulary: set[str] = set()
        while len(vocabulary) < 4000 + 40 * TOPICS:
            vocabulary.add("".join(self.rng.choices(syllables, k=self.rng.randint(3, 5))))
        words = sorted(vocabulary)
        self.rng.shuffle(words)
        self.general = words[:4000]
        self.zipf = [1.0 / (rank + 1) for rank in range(len(self.general))]
        self.topic_words = [words[4000 + 40 * t: 4040 + 40 * t] for t in range(TOPICS)]

    @staticmethod
    def _unit(v: list[float]) -> list[float]:
        scale = 1.0 / math.sqrt(math.fsum(x * x for x in v))
        return [x * scale for x in v]

    def _offset(self, index: int, shift: int) -> list[float]:
        base = self.pool[index % POOL]
        shift %= DIM
        return base[shift:] + base[:shift]

    def vector(self, thread: int) -> list[float]:
        """A vector of `thread` (its subtopic is thread // threads; without threads, thread is the subtopic)."""
        if self.threads:
            offset = self._offset(thread, 131 * (thread // POOL) + 17)
            v = [c + THREAD_SIGMA * o for c, o in zip(self.centres[thread // self.threads], offset, strict=True)]
        else:
            v = list(self.centres[thread])
        if self.basis:
            for direction in self.basis:
                weight = self.rng.gauss(0, self.noise_weight)
                v = [x + weight * d for x, d in zip(v, direction, strict=True)]
        else:
            noise = self._offset(self.rng.randrange(POOL), self.rng.randrange(DIM))
            v = [x + self.noise_weight * n for x, n in zip(v, noise, strict=True)]
        return self._unit(v)

    def text(self, thread: int, words: int) -> str:
        topic = self.topic_words[thread // (max(self.threads, 1) * SUBTOPICS)]
        general = self.rng.choices(self.general, self.zipf, k=words // 2)
        return " ".join(self.rng.choices(topic, k=words - len(general)) + general)

    def _thread(self) -> int:
        return self.rng.randrange(TOPICS * SUBTOPICS * max(self.threads, 1))

    def message(self) -> tuple[list[float], str]:
        thread = self._thread()
        return self.vector(thread), self.text(thread, self.rng.randint(8, 24))

    def query(self) -> tuple[list[float], str]:
        thread = self._thread()
        return self.vector(thread), self.text(thread, self.rng.randint(3, 7))


def records(corpus: Corpus, project_id: str, session_id: str, count: int,
            start: datetime) -> Iterator[tuple[Any, ...]]:
    for i in range(count):
        vector, text = corpus.message()
        created = start + timedelta(seconds=i)
        decision = i % 500 == 0
        yield (str(uuid.uuid4()), project_id, session_id, "user" if i % 2 else "assistant", text, vector, MODEL,
               created, created, decision)


async def load(url: str, corpus: Corpus, projects: list[tuple[str, int]]) -> dict[str, str]:
    """Creates the projects and COPYs their messages; builds the indexes afterwards. Returns name -> id."""
    conn = await asyncpg.connect(url)
    await apply_schema(conn)
    await register_vector(conn)
    await conn.execute("DROP INDEX IF EXISTS idx_messages_embedding; DROP INDEX IF EXISTS idx_messages_content_tsv")
    ids: dict[str, str] = {}
    now = datetime.now(UTC)
    columns = ["id", "project_id", "session_id", "role", "content", "embedding", "embedding_model", "embedded_at",
               "created_at", "is_key_decision"]
    started = time.perf_counter()
    total = 0
    for order, (name, count) in enumerate(projects):
        project_id, session_id = project_id_for(name), str(uuid.uuid4())
        ids[name] = project_id
        opened = now - timedelta(minutes=order)  # the first project is the most recently opened one
        await conn.execute("INSERT INTO projects (id, name, last_opened_at) VALUES ($1, $2, $3)",
                           project_id, name, opened)
        await conn.execute("INSERT INTO sessions (id, project_id, is_active) VALUES ($1, $2, false)",
                           session_id, project_id)
        rows = records(corpus, project_id, session_id, count, now - timedelta(days=30))
        while chunk := [row for _, row in zip(range(CHUNK), rows, strict=False)]:
            await conn.copy_records_to_table("messages", records=chunk, columns=columns)
            total += len(chunk)
            print(f"\r  loaded {total:,} messages ({time.perf_counter() - started:.0f} s)", end="", flush=True)
    print()
    step = time.perf_counter()
    await conn.execute("SET maintenance_work_mem = '2GB'")
    await conn.execute("SET max_parallel_maintenance_workers = 1")  # two cores: one leader plus one worker
    await conn.execute("CREATE INDEX idx_messages_embedding ON messages USING hnsw (embedding vector_cosine_ops)")
    print(f"  HNSW index (m=16, ef_construction=64) built in {time.perf_counter() - step:.0f} s")
    step = time.perf_counter()
    await conn.execute("CREATE INDEX idx_messages_content_tsv ON messages USING gin (content_tsv)")
    await conn.execute("VACUUM ANALYZE messages")
    print(f"  GIN index and VACUUM ANALYZE in {time.perf_counter() - step:.0f} s")
    await conn.close()
    return ids


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50, p95 = percentile(ordered, 0.5), percentile(ordered, 0.95)
    return f"p50 {p50 * 1000:6.2f} ms   p95 {p95 * 1000:6.2f} ms   max {ordered[-1] * 1000:6.2f} ms"


class TimedOllama(OllamaClient):
    """The bridge's query-embedding client, timing each embedding (the part of a search that is Ollama's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.times: list[float] = []

    async def embed_query(self, text: str) -> list[float]:
        started = time.perf_counter()
        try:
            return await super().embed_query(text)
        finally:
            self.times.append(time.perf_counter() - started)


async def over_osc(settings: Settings, queries: list[tuple[list[float], str]],
                   target: str) -> tuple[list[float], list[float], int]:
    """End-to-end latencies and the same minus the query embedding time; also how many results had a semantic hit.

    The bridge's query embeddings come from a fake Ollama inside this process (an httpx transport answering
    /api/embed in Ollama's JSON with the vector of the current query): a loopback server thread would compete with
    the bridge for the GIL and inflate the figures, which a real Ollama process does not."""
    current: list[list[float]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"model": MODEL, "embeddings": [current[-1]]})

    bridge = Bridge(settings)
    await bridge.start()
    worker = bridge.parts.memory
    await worker.queries.close()
    worker.queries = queries_client = TimedOllama(settings.ollama_url, MODEL, DIM, settings.query_embed_timeout,
                                                  transport=httpx.MockTransport(answer))
    embed_times = queries_client.times
    client = await BridgeClient.connect("127.0.0.1", settings.osc_port, transport="tcp")
    try:
        await client.call("/bridge/project/open", target, "")
        deadline = time.monotonic() + 60
        while not worker.semantic_ready() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if not worker.semantic_ready():
            raise SystemExit(f"the bridge never got ready for semantic search: {worker.last_error}")
        total: list[float] = []
        search_only: list[float] = []
        semantic_hits = 0
        for i, (vector, text) in enumerate(queries[:20] + queries):  # the first 20 warm up
            current.append(vector)
            before = len(embed_times)
            started = time.perf_counter()
            hits = await client.context_search(text, limit=10, timeout=10)
            elapsed = time.perf_counter() - started
            if i < 20:
                continue
            embedding = embed_times[-1] if len(embed_times) > before else 0.0
            total.append(elapsed)
            search_only.append(elapsed - embedding)
            semantic_hits += any("semantic" in h.reasons for h in hits)
    finally:
        await client.close()
        await bridge.stop()
    return total, search_only, semantic_hits


async def sql_only(url: str, project_id: str, queries: list[tuple[list[float], str]], ef: int) -> list[float]:
    conn = await asyncpg.connect(url)
    await register_vector(conn)
    try:
        engine = HybridSearch(ef)
        times = []
        for i, (vector, text) in enumerate(queries[:20] + queries):  # the first 20 warm up
            started = time.perf_counter()
            await engine.run(conn, project_id, text, vector, 10)
            if i >= 20:
                times.append(time.perf_counter() - started)
        return times
    finally:
        await conn.close()


async def recall(url: str, project_id: str, queries: list[tuple[list[float], str]], ef: int,
                 exact: list[list[str]]) -> tuple[float, list[float]]:
    conn = await asyncpg.connect(url)
    await register_vector(conn)
    try:
        engine = HybridSearch(ef)
        found = 0
        times = []
        for (vector, _), truth in zip(queries, exact, strict=True):
            started = time.perf_counter()
            approx = await engine.semantic_ids(conn, project_id, vector, 10)
            times.append(time.perf_counter() - started)
            found += len(set(approx) & set(truth))
        return found / (10 * len(queries)), times
    finally:
        await conn.close()


async def exact_neighbours(url: str, project_id: str, queries: list[tuple[list[float], str]]) -> list[list[str]]:
    conn = await asyncpg.connect(url)
    await register_vector(conn)
    try:
        engine = HybridSearch(40)
        return [await engine.semantic_ids(conn, project_id, vector, 10, exact=True) for vector, _ in queries]
    finally:
        await conn.close()


async def explain(url: str, project_id: str, vector: list[float], ef: int) -> str:
    conn = await asyncpg.connect(url)
    await register_vector(conn)
    try:
        lines = await HybridSearch(ef).explain_semantic(conn, project_id, vector, 10)
        return "\n".join("    " + re.sub(r"'\[[^]]*\]'", "'[query vector]'", line) for line in lines)
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", type=int, default=100_000, help="messages in the searched project")
    parser.add_argument("--others", type=int, default=4, help="other projects")
    parser.add_argument("--per-other", type=int, default=25_000, help="messages in each other project")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ef", default="40,100,200,400", help="ef_search values for the recall table")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=10,
                        help="threads per subtopic (0: no thread level, flat subtopic clusters: a harder case)")
    parser.add_argument("--noise-rank", type=int, default=8,
                        help="directions of the message noise (0: isotropic noise in all 768: a harder case)")
    args = parser.parse_args()
    configure_logging("warning")
    efs = [int(x) for x in args.ef.split(",")]
    default_ef = Settings().hnsw_ef_search

    with tempfile.TemporaryDirectory(prefix="oscbridge-bench-") as tmp:
        base = Path(tmp)
        base.chmod(0o755)  # the embedded server runs as its own user when we are root
        print(f"embedded PostgreSQL in {base}")
        # Not inside the bridge's data directory: the bridge makes that private (0700), and pg_ctl, running as the
        # embedded server's user, could no longer reach its cluster to stop it.
        embedded = EmbeddedPostgres(base / "postgres")
        url = await embedded.start_async()
        try:
            corpus = Corpus(args.seed, args.threads, args.noise_rank)
            target = "Bench Song"
            projects = [(target, args.target)] + [(f"Other Song {i}", args.per_other) for i in range(args.others)]
            print(f"loading {args.target:,} messages into {target!r} and {args.others} x {args.per_other:,} into "
                  f"other projects ({args.target + args.others * args.per_other:,} in all)")
            ids = await load(url, corpus, projects)
            queries = [corpus.query() for _ in range(args.queries)]

            with FakeOllama() as fake:  # for the embedding worker's own checks
                settings = Settings(host="127.0.0.1", osc_port=free_port(), data_dir=base / "data",
                                    database_url=url, ollama_url=fake.url)
                total, search_only, semantic = await over_osc(settings, queries, target)
            loadavg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"\n/bridge/context/search over OSC/TCP, limit 10, {len(total)} queries, ef_search {default_ef} "
                  f"(load average {loadavg} on {os.cpu_count()} cores):")
            print(f"  end to end (incl. query embedding): {percentiles(total)}")
            print(f"  minus the query embedding:          {percentiles(search_only)}")
            print(f"  queries whose result had a semantic hit: {semantic}/{len(total)}")
            sql_times = await sql_only(url, ids[target], queries, default_ef)
            print(f"  the hybrid SQL alone:               {percentiles(sql_times)}")

            for name in (target, *(projects[1][0:1] if args.others else ())):
                size = dict(projects)[name]
                print(f"\nrecall@10 of the semantic part, project {name!r} ({size:,} of "
                      f"{sum(c for _, c in projects):,} rows), {len(queries)} queries vs an exact scan:")
                exact = await exact_neighbours(url, ids[name], queries)
                for ef in efs:
                    value, times = await recall(url, ids[name], queries, ef, exact)
                    print(f"  ef_search {ef:4}: recall {value:.3f}   semantic query {percentiles(times)}")
            print("\nplan of the semantic part (target project):")
            print(await explain(url, ids[target], queries[0][0], default_ef))
        finally:
            await asyncio.to_thread(embedded.stop)


if __name__ == "__main__":
    run_on_daemon_loop(main)
