"""Async client for Ollama's embedding API, with the checks the original Swift client lacked.

The original called the superseded `/api/embeddings` one text at a time, without the task prefixes that
nomic-embed-text requires, without a length check (a wrong model made the INSERT fail and lost the message)
and with a 60 s default timeout on the save path. This client:

* uses `POST /api/embed` with a list input, so one request embeds a whole batch and the vectors come back
  L2-normalised (the legacy endpoint's are not);
* always adds the nomic task prefix (`search_document: ` for stored messages, `search_query: ` for
  queries), so the two sides of a search live in the same space;
* checks every vector's length against the configured dimension *before* anything reaches the database;
* maps every failure to one of a few exceptions, and tells callers through `retryable` whether trying again
  later can help (Ollama down, slow or overloaded) or a human has to act (model not pulled, wrong dimension);
* bounds every request by a total deadline, so a hung Ollama cannot hang the caller.

Messages name the Ollama URL (without any user:password part) and the model, never credentials.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import httpx

from oscbridge.jsontext import parse_json
from oscbridge.redact import redact_url, strip_password

DOCUMENT_PREFIX = "search_document: "
"""nomic-embed-text task prefix for texts that are stored and searched (messages, decisions)."""

QUERY_PREFIX = "search_query: "
"""nomic-embed-text task prefix for the text a search starts from."""

DEFAULT_BATCH_SIZE = 32
"""Texts per `/api/embed` request. Big enough to amortise the HTTP round trip, small enough that one request
stays well under the client timeout on a laptop GPU (Ollama embeds a batch sequentially per runner slot)."""

MAX_INPUT_CHARS = 8000
"""Texts longer than this are cut before sending. nomic-embed-text runs in Ollama with a 2048-token context
(GGUF n_ctx_train=2048, whatever the model card says), which is roughly 6-8k characters of prose. Ollama's
`truncate: true` cuts the rest server side, but cutting here as well keeps request bodies small and keeps a
single huge message (a pasted log, a base64 blob) from failing or stalling the whole batch. Semantic search
over the first ~2k tokens of a message is what the model can do anyway."""

PROBE_TEXT = "oscbridge health probe"
"""What `health()` embeds to learn the model's real dimension."""

_MODEL_NOT_FOUND = re.compile(r"model\b.*\bnot found", re.IGNORECASE | re.DOTALL)
_T = TypeVar("_T")


class OllamaError(Exception):
    """Base of every error this client raises. `retryable` says whether trying again later can help."""

    retryable: ClassVar[bool] = False

    def __init__(
        self, message: str, *, url: str | None = None, model: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.url = url
        self.model = model
        self.status = status
        """The HTTP status Ollama answered with, or None when no HTTP answer came (refused, timeout)."""


class OllamaUnavailable(OllamaError):
    """Ollama did not answer usefully right now: connection refused, timeout, dropped connection, 5xx, 429.

    Retryable: the embedding backfill should leave the rows NULL and try again with backoff."""

    retryable: ClassVar[bool] = True


class OllamaModelMissing(OllamaError):
    """The configured model is not pulled on that Ollama. A human has to run `ollama pull`."""

    def __init__(self, model: str, url: str, detail: str | None = None, status: int | None = None) -> None:
        msg = (
            f"Ollama at {url} does not have the model {model!r}"
            + (f" ({detail})" if detail else "")
            + f": run `ollama pull {model}` on that machine, or set OSCBRIDGE_EMBED_MODEL to a model it has"
        )
        super().__init__(msg, url=url, model=model, status=status)


class DimensionMismatch(OllamaError):
    """The model returns vectors of another length than the `vector(dim)` column expects.

    Raised before anything is written, so a misconfigured model never loses a message (the original let the
    INSERT fail)."""

    def __init__(self, model: str, expected: int, got: int, url: str | None = None) -> None:
        where = f" at {url}" if url else ""
        msg = (
            f"embedding model {model!r}{where} returns {got}-dimensional vectors but oscbridge is "
            f"configured for {expected}: choose an embedding model with {expected} dimensions "
            f"(OSCBRIDGE_EMBED_MODEL, e.g. nomic-embed-text for 768), or change OSCBRIDGE_EMBED_DIM to "
            f"{got}, which is a schema change (the messages.embedding column and its index must be rebuilt "
            f"and every stored embedding recomputed)"
        )
        super().__init__(msg, url=url, model=model)
        self.expected = expected
        self.got = got


class OllamaBadResponse(OllamaError):
    """Ollama (or whatever listens at that URL) answered, but not in the shape Ollama's API documents."""


@dataclass(frozen=True)
class OllamaHealth:
    """What `oscbridge doctor` and `/bridge/status` report about Ollama.

    `reachable` means an HTTP server answered at the URL; `model_present` that `/api/tags` lists the model;
    `dim` is the length of a probe embedding (None when no probe could be made); `error` is the first problem
    found, worded for a human, or None when all is well."""

    reachable: bool
    version: str | None = None
    model_present: bool = False
    dim: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when embeddings can be made right now with the configured model and dimension."""
        return self.reachable and self.model_present and self.dim is not None and self.error is None


def batched(items: Sequence[_T], size: int = DEFAULT_BATCH_SIZE) -> Iterator[Sequence[_T]]:
    """Yields consecutive slices of at most `size` items, in order (the last one may be shorter)."""
    if size < 1:
        raise ValueError(f"batch size must be at least 1, not {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def prepare_text(text: str, prefix: str, max_chars: int = MAX_INPUT_CHARS) -> str:
    """Returns what is actually sent for `text`: cut to `max_chars`, made encodable, with the task prefix.

    Lone surrogates (which a lenient decoder can let into a str) would make the JSON body unencodable and fail
    the whole batch, so they are replaced."""
    if len(text) > max_chars:
        text = text[:max_chars]
    text = text.encode("utf-8", "replace").decode("utf-8")
    return prefix + text


def _error_text(response: httpx.Response) -> str:
    """Ollama puts its reason in `{"error": "..."}`; anything else is shown shortened."""
    try:
        body = parse_json(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        text: str = body["error"]
    else:
        text = response.text
    text = " ".join(text.split())
    return text[:300] + ("..." if len(text) > 300 else "")


class OllamaClient:
    """One connection pool to one Ollama, for one embedding model of a known dimension.

    Safe to share between tasks. `timeout` is a total deadline per HTTP request (connect, send, wait, read),
    so callers on a latency-sensitive path get an answer, even if it is `OllamaUnavailable`. `transport` lets
    tests substitute an `httpx.MockTransport`; normal use leaves it None.

    Proxy environment variables are ignored (`trust_env=False`): Ollama is addressed directly by its
    configured URL, usually on loopback, and an `ALL_PROXY`/`HTTP_PROXY` meant for the browser must not
    reroute or break it.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        dim: int,
        timeout: float = 30.0,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"Ollama URL must start with http:// or https://, got {redact_url(base_url)!r} "
                "(check OSCBRIDGE_OLLAMA_URL)"
            )
        try:
            httpx.URL(base_url)
        except httpx.InvalidURL as exc:
            raise ValueError(
                f"Ollama URL {redact_url(base_url)!r} is not valid: {exc} (check OSCBRIDGE_OLLAMA_URL)"
            ) from exc
        if not model:
            raise ValueError("embedding model name is empty (check OSCBRIDGE_EMBED_MODEL)")
        if dim < 1:
            raise ValueError(f"embedding dimension must be positive, not {dim}")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, not {timeout}")
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, not {batch_size}")
        self.model = model
        self.dim = dim
        self.timeout = timeout
        self.batch_size = batch_size
        self.url = strip_password(base_url)[0].rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=base_url,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            trust_env=False,
            headers={"User-Agent": "oscbridge"},
        )

    async def close(self) -> None:
        """Closes the connection pool. The client cannot be used afterwards."""
        await self._http.aclose()

    async def __aenter__(self) -> OllamaClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- embeddings ----------------------------------------------------------------------------------------

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        """Embeds texts to be stored and searched, one vector per text in the same order.

        Sends batches of `batch_size` one after the other; if any batch fails the whole call raises, so
        callers that want partial progress should call this once per batch (see `batched`)."""
        if isinstance(texts, str):  # a str is a Sequence[str]; embedding it letter by letter is never meant
            raise TypeError("embed_documents takes a list of texts, not a single str (use [text])")
        prepared = [prepare_text(t, DOCUMENT_PREFIX) for t in texts]
        vectors: list[list[float]] = []
        for batch in batched(prepared, self.batch_size):
            vectors.extend(await self._embed_checked(list(batch)))
        return vectors

    async def embed_query(self, text: str) -> list[float]:
        """Embeds the text a semantic search starts from."""
        (vector,) = await self._embed_checked([prepare_text(text, QUERY_PREFIX)])
        return vector

    async def _embed_checked(self, inputs: list[str]) -> list[list[float]]:
        vectors = await self._embed_raw(inputs)
        for vector in vectors:
            if len(vector) != self.dim:
                raise DimensionMismatch(self.model, self.dim, len(vector), self.url)
        return vectors

    async def _embed_raw(self, inputs: list[str]) -> list[list[float]]:
        """One `/api/embed` request; checks the shape of the answer but not the dimension."""
        if not inputs:
            return []
        body = await self._request_json(
            "POST", "/api/embed", json={"model": self.model, "input": inputs, "truncate": True}
        )
        embeddings = body.get("embeddings") if isinstance(body, dict) else None
        if not isinstance(embeddings, list):
            raise self._bad_response("/api/embed", "no 'embeddings' list in the answer")
        if len(embeddings) != len(inputs):
            raise self._bad_response("/api/embed", f"{len(embeddings)} embeddings for {len(inputs)} inputs")
        vectors: list[list[float]] = []
        for item in embeddings:
            if not isinstance(item, list) or not all(
                isinstance(x, int | float) and not isinstance(x, bool) for x in item
            ):
                raise self._bad_response("/api/embed", "an embedding is not a list of numbers")
            vector = [float(x) for x in item]
            if not all(math.isfinite(x) for x in vector):
                raise self._bad_response("/api/embed", "an embedding contains NaN or infinity")
            vectors.append(vector)
        return vectors

    # -- health --------------------------------------------------------------------------------------------

    async def health(self) -> OllamaHealth:
        """Checks Ollama step by step and says where it stops; never raises an `OllamaError`.

        Order: `/api/version` (is anything there), `/api/tags` (is the model pulled), then one probe embedding
        (does it work, and what dimension). The probe runs only when the model is present, because asking
        Ollama for a missing model is pointless and the probe may take a few seconds while the model loads."""
        version: str | None = None
        try:
            answer = await self._request_json("GET", "/api/version")
            if isinstance(answer, dict) and isinstance(answer.get("version"), str):
                version = answer["version"]
        except OllamaUnavailable as exc:
            # A 5xx still proves that a server is there; refused connections and timeouts do not.
            return OllamaHealth(reachable=exc.status is not None, error=str(exc))
        except OllamaError:
            pass  # something answered; an old or proxied Ollama may lack /api/version

        try:
            tags = await self._request_json("GET", "/api/tags")
            present = self._model_listed(tags)
        except OllamaError as exc:
            return OllamaHealth(reachable=True, version=version, error=str(exc))
        if not present:
            return OllamaHealth(
                reachable=True,
                version=version,
                model_present=False,
                error=str(OllamaModelMissing(self.model, self.url, "not listed by /api/tags")),
            )

        try:
            (probe,) = await self._embed_raw([prepare_text(PROBE_TEXT, QUERY_PREFIX)])
        except OllamaError as exc:
            return OllamaHealth(reachable=True, version=version, model_present=True, error=str(exc))
        error = None
        if len(probe) != self.dim:
            error = str(DimensionMismatch(self.model, self.dim, len(probe), self.url))
        return OllamaHealth(reachable=True, version=version, model_present=True, dim=len(probe), error=error)

    def _model_listed(self, tags: Any) -> bool:
        """True when `/api/tags` lists the model as named, or as `<model>:latest` when no tag was given."""
        models = tags.get("models") if isinstance(tags, dict) else None
        if not isinstance(models, list):
            raise self._bad_response("/api/tags", "no 'models' list in the answer")
        wanted = {self.model}
        if ":" not in self.model.rsplit("/", 1)[-1]:
            wanted.add(self.model + ":latest")
        for entry in models:
            if isinstance(entry, dict) and (entry.get("name") in wanted or entry.get("model") in wanted):
                return True
        return False

    # -- transport -----------------------------------------------------------------------------------------

    async def _request_json(self, method: str, path: str, json: Any = None) -> Any:
        """Sends one request under the total deadline and returns the decoded JSON of a 2xx answer."""
        where = f"Ollama at {self.url}{path} (model {self.model!r})"
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._http.request(method, path, json=json)
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise OllamaUnavailable(
                f"{where} did not answer within {self.timeout:g} s", url=self.url, model=self.model
            ) from exc
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise OllamaUnavailable(
                f"cannot reach {where}: {reason} (is `ollama serve` running?)", url=self.url, model=self.model
            ) from exc

        status = response.status_code
        if status >= 400:
            detail = _error_text(response)
            if _MODEL_NOT_FOUND.search(detail):
                raise OllamaModelMissing(self.model, self.url, detail, status)
            if status == 404:
                # Ollama says "model ... not found" in JSON; a plain-text 404 means no such endpoint.
                if response.headers.get("content-type", "").startswith("application/json"):
                    raise OllamaModelMissing(self.model, self.url, detail, status)
                raise OllamaBadResponse(
                    f"{where} answered 404 ({detail}): this is not an Ollama that has {path} "
                    "(Ollama 0.3 or newer is needed; check OSCBRIDGE_OLLAMA_URL)",
                    url=self.url,
                    model=self.model,
                    status=status,
                )
            if status >= 500 or status == 429:
                raise OllamaUnavailable(
                    f"{where} answered HTTP {status}: {detail}", url=self.url, model=self.model, status=status
                )
            raise OllamaError(
                f"{where} refused the request with HTTP {status}: {detail}",
                url=self.url,
                model=self.model,
                status=status,
            )
        try:
            return parse_json(response.content)
        except ValueError as exc:
            raise self._bad_response(path, "the answer is not JSON") from exc

    def _bad_response(self, path: str, what: str) -> OllamaBadResponse:
        return OllamaBadResponse(
            f"unexpected answer from Ollama at {self.url}{path} (model {self.model!r}): {what}",
            url=self.url,
            model=self.model,
        )
