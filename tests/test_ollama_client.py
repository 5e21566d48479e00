"""The Ollama client against an Ollama-compatible server over real loopback HTTP.

Covers what the original Swift client got wrong: task prefixes, batching, dimension checks before anything is
stored, bounded waiting on a hung Ollama, and errors that say what to do."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from oscbridge.embed import (
    DEFAULT_BATCH_SIZE,
    DOCUMENT_PREFIX,
    MAX_INPUT_CHARS,
    QUERY_PREFIX,
    DimensionMismatch,
    OllamaBadResponse,
    OllamaClient,
    OllamaError,
    OllamaHealth,
    OllamaModelMissing,
    OllamaUnavailable,
    batched,
)

# tests/ is a plain directory (no __init__.py), which pytest puts on sys.path for its test modules.
from oscbridge.tools.fake_ollama import FakeOllama, cosine, fake_embedding
from tests.conftest import wait_until

MODEL = "nomic-embed-text"
DIM = 768


@pytest.fixture
async def client(fake: FakeOllama) -> AsyncIterator[OllamaClient]:
    async with OllamaClient(fake.url, MODEL, DIM, timeout=2.0) as c:
        yield c


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


# -- the fake's embeddings ------------------------------------------------------------------------------------


def test_fake_embeddings_are_deterministic_normalised_and_meaningful() -> None:
    doc = fake_embedding("search_document: raise the kick drum level on track 3")
    assert doc == fake_embedding("search_document: raise the kick drum level on track 3")
    assert len(doc) == DIM
    assert norm(doc) == pytest.approx(1.0)
    # The prefix is not part of the meaning, so a query finds the document it repeats.
    assert fake_embedding("search_query: raise the kick drum level on track 3") == doc

    related = fake_embedding("search_query: how loud is the kick drum")
    unrelated = fake_embedding("search_query: tempo of the chorus in bpm")
    assert cosine(related, doc) > 0.3
    assert abs(cosine(unrelated, doc)) < 0.15
    assert cosine(related, doc) > cosine(unrelated, doc) + 0.2

    # Texts without words still get a usable (non-zero, normalised) vector.
    for text in ("", "search_document: ", "?!", "the of and"):
        assert norm(fake_embedding(text)) == pytest.approx(1.0)


def test_fake_server_speaks_ollama_shapes_to_a_sync_client(fake: FakeOllama) -> None:
    with httpx.Client(base_url=fake.url, timeout=2.0) as http:
        assert http.get("/").text == "Ollama is running"
        assert http.get("/api/version").json() == {"version": "0.12.3"}
        tags = http.get("/api/tags").json()
        assert [m["name"] for m in tags["models"]] == ["nomic-embed-text:latest"]
        assert tags["models"][0]["details"]["family"] == "nomic-bert"

        one = http.post("/api/embed", json={"model": MODEL, "input": "search_query: hello"}).json()
        assert set(one) >= {"model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"}
        assert one["embeddings"] == [fake_embedding("hello")]

        legacy = http.post("/api/embeddings", json={"model": MODEL, "prompt": "search_query: hello world"})
        vector = legacy.json()["embedding"]
        assert len(vector) == DIM
        assert norm(vector) > 1.5  # legacy endpoint is not normalised, like Ollama's
        assert cosine(vector, fake_embedding("hello world")) == pytest.approx(1.0)

        missing = http.post("/api/embed", json={"model": "all-minilm", "input": ["x"]})
        assert missing.status_code == 404
        assert missing.json() == {"error": 'model "all-minilm" not found, try pulling it first'}

        fake.set_context_tokens(5)
        too_long = {"model": MODEL, "input": ["one two three four five six"], "truncate": False}
        assert http.post("/api/embed", json=too_long).status_code == 400
        assert http.get("/api/nothing").status_code == 404

    assert fake.requests["/api/embed"] == 3
    assert fake.texts_embedded == 2
    assert fake.unprefixed == 0


# -- embedding requests -----------------------------------------------------------------------------------------


async def test_documents_and_queries_carry_their_nomic_prefix(fake: FakeOllama, client: OllamaClient) -> None:
    vectors = await client.embed_documents(["Kick drum too loud", "Chorus tempo is 120 bpm"])
    assert fake.last_inputs == [DOCUMENT_PREFIX + "Kick drum too loud", DOCUMENT_PREFIX + "Chorus tempo is 120 bpm"]
    assert fake.last_body == {"model": MODEL, "input": fake.last_inputs, "truncate": True}
    assert vectors == [fake_embedding(t) for t in fake.last_inputs]  # order kept

    query = await client.embed_query("how loud is the kick")
    assert fake.last_inputs == [QUERY_PREFIX + "how loud is the kick"]
    assert len(query) == DIM
    assert cosine(query, vectors[0]) > cosine(query, vectors[1])
    assert fake.unprefixed == 0


async def test_long_lists_go_in_batches_and_keep_their_order(fake: FakeOllama) -> None:
    texts = [f"message number {i} about track {i}" for i in range(70)]
    async with OllamaClient(fake.url, MODEL, DIM, batch_size=32) as c:
        vectors = await c.embed_documents(texts)
    assert fake.batch_sizes == [32, 32, 6]
    assert vectors == [fake_embedding(t) for t in texts]
    assert fake.texts_embedded == 70


async def test_default_batch_size_and_empty_input(fake: FakeOllama, client: OllamaClient) -> None:
    assert await client.embed_documents([]) == []
    assert fake.requests == {}  # nothing to embed, nothing sent
    await client.embed_documents(["x"] * (DEFAULT_BATCH_SIZE + 1))
    assert fake.batch_sizes == [DEFAULT_BATCH_SIZE, 1]


def test_batched_helper() -> None:
    assert [list(b) for b in batched([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]
    assert list(batched([], 3)) == []
    with pytest.raises(ValueError):
        list(batched([1], 0))


async def test_huge_texts_are_cut_before_sending(fake: FakeOllama, client: OllamaClient) -> None:
    huge = "word " * 10_000  # 50,000 characters
    (vector,) = await client.embed_documents([huge])
    (sent,) = fake.last_inputs
    assert sent == DOCUMENT_PREFIX + huge[:MAX_INPUT_CHARS]
    assert len(vector) == DIM

    # Past the model's context Ollama truncates because the client asks it to (truncate: true).
    fake.set_context_tokens(10)
    await client.embed_documents(["short", " ".join(f"w{i}" for i in range(50))])
    assert fake.truncated == 1


async def test_unencodable_text_does_not_fail_the_batch(fake: FakeOllama, client: OllamaClient) -> None:
    vectors = await client.embed_documents(["fine", "broken \ud800 surrogate"])
    assert len(vectors) == 2
    assert fake.last_inputs[1] == DOCUMENT_PREFIX + "broken ? surrogate"


async def test_concurrent_callers_share_the_client(fake: FakeOllama, client: OllamaClient) -> None:
    texts = [f"query {i}" for i in range(8)]
    vectors = await asyncio.gather(*(client.embed_query(t) for t in texts))
    assert vectors == [fake_embedding(t) for t in texts]


# -- errors -------------------------------------------------------------------------------------------------------


async def test_wrong_dimension_is_refused_with_advice(fake: FakeOllama, client: OllamaClient) -> None:
    fake.set_dim(384)
    with pytest.raises(DimensionMismatch) as info:
        await client.embed_documents(["a", "b"])
    err = info.value
    assert (err.expected, err.got, err.model) == (768, 384, MODEL)
    assert not err.retryable
    text = str(err)
    assert "OSCBRIDGE_EMBED_DIM" in text and "schema change" in text and "768" in text and "384" in text
    with pytest.raises(DimensionMismatch):
        await client.embed_query("a")


async def test_missing_model_says_ollama_pull(fake: FakeOllama, client: OllamaClient) -> None:
    fake.set_models(["llama3.2:latest"])
    with pytest.raises(OllamaModelMissing) as info:
        await client.embed_query("anything")
    assert "ollama pull nomic-embed-text" in str(info.value)
    assert fake.url in str(info.value)
    assert not info.value.retryable
    assert info.value.status == 404


async def test_model_name_with_explicit_tag(fake: FakeOllama) -> None:
    async with OllamaClient(fake.url, "nomic-embed-text:latest", DIM) as c:
        assert len(await c.embed_query("x")) == DIM
        assert (await c.health()).ok
    async with OllamaClient(fake.url, "nomic-embed-text:v1.5", DIM) as c:
        with pytest.raises(OllamaModelMissing):
            await c.embed_query("x")
        assert not (await c.health()).model_present


async def test_server_down_fails_fast_and_recovers(fake: FakeOllama) -> None:
    # A 30 s timeout, so that failing fast (a refused connection) cannot be mistaken for waiting it out.
    async with OllamaClient(fake.url, MODEL, DIM, timeout=30.0) as client:
        await client.embed_query("warm the connection pool")  # leaves a keep-alive connection in the pool
        fake.stop()
        started = time.monotonic()
        with pytest.raises(OllamaUnavailable) as info:
            await client.embed_query("while down")
        assert time.monotonic() - started < 5.0
        assert info.value.retryable and info.value.status is None
        assert fake.url in str(info.value) and MODEL in str(info.value)

        fake.start()  # same port, same client
        assert await client.embed_query("back again") == fake_embedding("back again")


async def test_hung_server_times_out_as_unavailable(fake: FakeOllama) -> None:
    fake.set_delay(30)
    async with OllamaClient(fake.url, MODEL, DIM, timeout=0.3) as c:
        started = time.monotonic()
        with pytest.raises(OllamaUnavailable) as info:
            await c.embed_documents(["slow"])
        elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 5.0  # the 0.3 s, not the 30 s the server would take
    assert "0.3 s" in str(info.value)
    # It did reach the server, which never answered (the server's thread may count it a moment later).
    await wait_until(lambda: fake.request_count("/api/embed") == 1)

    # A cancelled request must not leave the client's connection pool unusable. The request is cancelled from
    # outside (as the client's own deadline does), so that the answered ones get a deadline a busy machine meets.
    fake.set_delay(0)
    async with OllamaClient(fake.url, MODEL, DIM, timeout=10.0) as c:
        fake.set_delay(30)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await c.embed_query("slow")
        fake.set_delay(0)
        assert await c.embed_query("fast") == fake_embedding("fast")


@pytest.mark.parametrize("status", [500, 502, 503, 429])
async def test_server_errors_are_retryable(fake: FakeOllama, client: OllamaClient, status: int) -> None:
    fake.set_fail(status, "/api/embed", "llama runner process has terminated")
    with pytest.raises(OllamaUnavailable) as info:
        await client.embed_query("x")
    assert info.value.status == status and info.value.retryable
    assert "llama runner process has terminated" in str(info.value)


async def test_client_errors_are_not_retryable(fake: FakeOllama, client: OllamaClient) -> None:
    fake.set_fail(400, "/api/embed", '"nomic-embed-text" does not support embeddings')
    with pytest.raises(OllamaError) as info:
        await client.embed_query("x")
    assert type(info.value) is OllamaError
    assert not info.value.retryable and info.value.status == 400
    assert "does not support embeddings" in str(info.value)


@pytest.mark.parametrize(
    "body",
    [
        {"model": MODEL},  # no embeddings
        {"model": MODEL, "embeddings": []},  # wrong count
        {"model": MODEL, "embeddings": [["0.1", "0.2"]]},  # not numbers
        {"model": MODEL, "embeddings": [[True] * DIM]},  # bools are not numbers either
        {"model": MODEL, "embeddings": "nope"},
        "this is not json",
    ],
)
async def test_malformed_answers_are_bad_responses(fake: FakeOllama, client: OllamaClient, body: object) -> None:
    fake.set_override("/api/embed", 200, body)
    with pytest.raises(OllamaBadResponse) as info:
        await client.embed_query("x")
    assert fake.url in str(info.value)


async def test_plain_404_means_not_an_ollama_with_api_embed(fake: FakeOllama, client: OllamaClient) -> None:
    fake.set_override("/api/embed", 404, "404 page not found")  # Ollama older than 0.3, or another server
    with pytest.raises(OllamaBadResponse) as info:
        await client.embed_query("x")
    assert "0.3" in str(info.value) and "OSCBRIDGE_OLLAMA_URL" in str(info.value)


async def test_credentials_in_the_url_never_appear_in_messages(fake: FakeOllama) -> None:
    secret_url = fake.url.replace("http://", "http://bridge:s3cret@")
    async with OllamaClient(secret_url, MODEL, DIM) as c:
        assert len(await c.embed_query("ok")) == DIM  # the URL still works
        assert "s3cret" not in c.url
        fake.set_models([])
        with pytest.raises(OllamaModelMissing) as missing:
            await c.embed_query("x")
        health = await c.health()
        fake.stop()
        with pytest.raises(OllamaUnavailable) as down:
            await c.embed_query("x")
    for text in (str(missing.value), str(health.error), str(down.value)):
        assert "s3cret" not in text and "bridge:" not in text


def test_constructor_refuses_unusable_settings() -> None:
    with pytest.raises(ValueError, match="OSCBRIDGE_OLLAMA_URL"):
        OllamaClient("localhost:11434", MODEL, DIM)
    with pytest.raises(ValueError, match="OSCBRIDGE_OLLAMA_URL"):
        OllamaClient("http://127.0.0.1:port", MODEL, DIM)
    with pytest.raises(ValueError):
        OllamaClient("http://127.0.0.1:11434", MODEL, 0)


async def test_a_single_string_is_not_a_list_of_texts(client: OllamaClient) -> None:
    with pytest.raises(TypeError):
        await client.embed_documents("one message")


async def test_a_custom_transport_replaces_the_network() -> None:
    seen: list[dict[str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        import json

        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"model": MODEL, "embeddings": [[0.5] * 4]})

    async with OllamaClient("http://ollama.invalid", MODEL, 4, transport=httpx.MockTransport(answer)) as c:
        assert await c.embed_query("x") == [0.5] * 4
    assert seen == [{"model": MODEL, "input": [QUERY_PREFIX + "x"], "truncate": True}]


# -- health -------------------------------------------------------------------------------------------------------


async def test_health_when_all_is_well(fake: FakeOllama, client: OllamaClient) -> None:
    health = await client.health()
    assert health == OllamaHealth(reachable=True, version="0.12.3", model_present=True, dim=768, error=None)
    assert health.ok
    assert fake.requests == {"/api/version": 1, "/api/tags": 1, "/api/embed": 1}
    assert fake.unprefixed == 0


async def test_health_when_ollama_is_down(fake: FakeOllama, client: OllamaClient) -> None:
    fake.stop()
    health = await client.health()
    assert not health.reachable and not health.ok
    assert health.model_present is False and health.dim is None
    assert health.error is not None and fake.url in health.error


async def test_health_when_ollama_hangs(fake: FakeOllama) -> None:
    fake.set_delay(30)
    async with OllamaClient(fake.url, MODEL, DIM, timeout=0.3) as c:
        started = time.monotonic()
        health = await c.health()
    assert time.monotonic() - started < 5.0  # the 0.3 s per request, not the 30 s the server would take
    assert not health.reachable
    assert health.error is not None and "did not answer" in health.error


async def test_health_when_model_is_missing(fake: FakeOllama, client: OllamaClient) -> None:
    fake.set_models(["llama3.2:latest"])
    health = await client.health()
    assert health.reachable and not health.model_present and health.dim is None
    assert health.error is not None and "ollama pull nomic-embed-text" in health.error
    assert fake.request_count("/api/embed") == 0  # no probe for a model that is not there


async def test_health_when_dimension_is_wrong(fake: FakeOllama, client: OllamaClient) -> None:
    fake.set_dim(1024)
    health = await client.health()
    assert health.reachable and health.model_present and health.dim == 1024
    assert not health.ok
    assert health.error is not None and "OSCBRIDGE_EMBED_DIM" in health.error


async def test_health_when_embedding_fails_but_server_answers(fake: FakeOllama, client: OllamaClient) -> None:
    fake.set_fail(500, "/api/embed", "llama runner process has terminated")
    health = await client.health()
    assert health.reachable and health.model_present and health.dim is None
    assert health.error is not None and "terminated" in health.error


async def test_health_when_every_endpoint_fails_with_5xx(fake: FakeOllama, client: OllamaClient) -> None:
    fake.set_fail(503)
    health = await client.health()
    assert health.reachable  # an HTTP answer proves a server is there
    assert not health.ok and health.error is not None and "503" in health.error


async def test_health_without_version_endpoint(fake: FakeOllama, client: OllamaClient) -> None:
    fake.set_override("/api/version", 404, "404 page not found")
    health = await client.health()
    assert health.version is None
    assert health.ok
