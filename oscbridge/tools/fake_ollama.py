"""An Ollama-compatible HTTP server on loopback, for tests (Ollama itself cannot run here).

It speaks the JSON shapes of Ollama's `docs/api.md` for the endpoints oscbridge uses: `POST /api/embed`,
legacy `POST /api/embeddings`, `GET /api/tags`, `GET /api/version` (and `GET /`, "Ollama is running"). It runs
`http.server.ThreadingHTTPServer` in a daemon thread, so sync and async tests can both use it; an async test
talks to it over real sockets while the event loop keeps running.

Embeddings are deterministic and meaningful enough for ranking tests: the task prefix (`search_document: `,
`search_query: `, ...) is stripped, the rest is lower-cased and split into word tokens, common English stop
words are dropped, and each remaining word adds +/-1 to a few hashed dimensions. The sum is L2-normalised (as
`/api/embed` does; the legacy endpoint returns it un-normalised, as Ollama's does). So texts that share words
have a high cosine, texts that share none have a cosine near 0, and the same text always gives the same vector
(hashing uses blake2b, not Python's salted `hash`). Query and document prefixes give the same vector here,
unlike the real model; tests that care about prefixes check `last_inputs`/`all_inputs` instead.

Controls (all thread-safe, all survive `stop()`/`start()`): `set_delay`, `set_fail`, `set_override`,
`set_dim`, `set_models`, `set_context_tokens`, `reset`. `stop()` closes the listening socket *and* every open
keep-alive connection, as a dying Ollama process would; `start()` listens again on the same port.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

DEFAULT_MODELS = ("nomic-embed-text:latest",)
DEFAULT_DIM = 768
DEFAULT_VERSION = "0.12.3"
DEFAULT_CONTEXT_TOKENS = 2048  # nomic-embed-text's n_ctx_train in Ollama; "tokens" here are words
SLOTS_PER_WORD = 4

_PREFIX = re.compile(r"^(search_document|search_query|clustering|classification):\s?")
_WORD = re.compile(r"\w+")
# Dropped before hashing, so that "the" and "is" do not make unrelated sentences look alike.
STOP_WORDS = frozenset(
    """a an and are as at be but by do for from has have he her his i if in is it its me my no not of on or our
    she so that the their them then there these they this to up us was we were what when which who will with
    you your""".split()  # noqa: SIM905 - a word list reads better as text
)


def strip_prefix(text: str) -> str:
    """The text without its nomic task prefix, if it has one."""
    return _PREFIX.sub("", text, count=1)


def words(text: str) -> list[str]:
    """The tokens the fake model sees: lower-cased words of the text without its prefix, minus stop words."""
    return [w for w in _WORD.findall(strip_prefix(text).lower()) if w not in STOP_WORDS]


def fake_embedding(text: str, dim: int = DEFAULT_DIM, *, normalise: bool = True) -> list[float]:
    """The vector the fake server returns for `text`: a signed hashed bag of words.

    A text without any word (empty, punctuation, only stop words) is hashed as a whole, so it still gets a
    non-zero vector: a zero vector has no cosine and would make pgvector return NaN distances."""
    tokens = words(text) or [strip_prefix(text).strip().lower()]
    vec = [0.0] * dim
    for token in tokens:
        digest = hashlib.blake2b(token.encode("utf-8", "replace"), digest_size=4 * SLOTS_PER_WORD).digest()
        for slot in range(SLOTS_PER_WORD):
            chunk = digest[4 * slot : 4 * slot + 4]
            index = int.from_bytes(chunk[:3], "little") % dim
            vec[index] += 1.0 if chunk[3] & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vec))
    if norm == 0.0:  # every slot cancelled out; vanishingly rare, but keep vectors non-zero
        vec[0], norm = 1.0, 1.0
    return [x / norm for x in vec] if normalise else vec


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity, for tests that compare fake embeddings."""
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _canonical(model: str) -> str:
    """Ollama's name resolution for the cases that matter here: no tag means `:latest`."""
    return model if ":" in model.rsplit("/", 1)[-1] else model + ":latest"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: FakeOllama

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connections cut by `stop()` or by a client that gave up are expected here; stay quiet about them."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like Ollama's Go server, so the client's pool is exercised
    server: _Server
    server_version = "fake-ollama"
    disable_nagle_algorithm = True  # small JSON answers must not wait for delayed ACKs (~40 ms each)

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read counters, not access logs

    def do_GET(self) -> None:
        self.server.owner._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.owner._handle(self, "POST")

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def send(self, status: int, body: Any, content_type: str | None = None) -> None:
        """Answers with JSON (for dicts/lists) or text (for str/bytes), with a Content-Length."""
        if isinstance(body, bytes | str):
            data = body.encode() if isinstance(body, str) else body
            ctype = content_type or "text/plain; charset=utf-8"
        else:
            data = json.dumps(body).encode()
            ctype = content_type or "application/json; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()


class FakeOllama:
    """An Ollama stand-in on 127.0.0.1. Use as a context manager, or call `start()` and `stop()`.

    `port=0` picks a free port on the first `start()`; later starts reuse it, so a client configured with `url`
    sees the same Ollama go down and come back."""

    def __init__(
        self,
        *,
        models: Iterable[str] = DEFAULT_MODELS,
        dim: int = DEFAULT_DIM,
        version: str = DEFAULT_VERSION,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.host = host
        self._port = port
        self.version = version
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._conns: set[socket.socket] = set()
        self._models = list(models)
        self._dim = dim
        self._context_tokens = DEFAULT_CONTEXT_TOKENS
        self._delays: dict[str | None, float] = {}
        self._fails: dict[str | None, tuple[int, str | None]] = {}
        self._overrides: dict[str, tuple[int, Any]] = {}
        self._reset_counters()

    # -- lifecycle -----------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("FakeOllama has no port before its first start()")
        return self._port

    @property
    def url(self) -> str:
        """Base URL for `OllamaClient`, e.g. http://127.0.0.1:54321."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        with self._lock:
            return self._server is not None

    def start(self) -> FakeOllama:
        """Listens (again) on the port; a no-op when already running."""
        with self._lock:
            if self._server is not None:
                return self
            server = _Server((self.host, self._port), _Handler)
            server.owner = self
            self._port = server.server_address[1]
            self._halt = threading.Event()
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.02},
                name=f"fake-ollama:{self._port}",
                daemon=True,
            )
            self._server, self._thread = server, thread
        thread.start()
        return self

    def stop(self) -> None:
        """Stops like a killed Ollama: no more listening, open connections cut, delayed answers never sent."""
        with self._lock:
            server, thread, halt = self._server, self._thread, self._halt
            self._server = self._thread = None
            conns = list(self._conns)
        if server is None:
            return
        halt.set()
        server.shutdown()
        server.server_close()
        for conn in conns:
            with contextlib.suppress(OSError):  # already closed by its handler
                conn.shutdown(socket.SHUT_RDWR)
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    # -- controls ------------------------------------------------------------------------------------------

    def set_delay(self, seconds: float, path: str | None = None) -> None:
        """Waits `seconds` before answering (all endpoints, or only `path` such as "/api/embed").

        A large value simulates a hung Ollama; `stop()` still ends such requests at once (without an answer).
        0 removes the delay."""
        with self._lock:
            if seconds > 0:
                self._delays[path] = seconds
            else:
                self._delays.pop(path, None)

    def set_fail(self, status: int | None, path: str | None = None, message: str | None = None) -> None:
        """Answers HTTP `status` with `{"error": message}` (all endpoints, or only `path`); None stops failing."""
        with self._lock:
            if status is None:
                self._fails.pop(path, None)
            else:
                self._fails[path] = (status, message)

    def set_override(self, path: str, status: int | None = 200, body: Any = None) -> None:
        """Answers `path` with exactly this status and body (JSON unless str/bytes); status None removes it.

        For malformed answers: missing keys, wrong counts, non-JSON, a plain-text 404."""
        with self._lock:
            if status is None:
                self._overrides.pop(path, None)
            else:
                self._overrides[path] = (status, body)

    def set_dim(self, dim: int) -> None:
        """Length of the vectors from now on (simulates a model of another dimension)."""
        with self._lock:
            self._dim = dim

    def set_models(self, names: Iterable[str]) -> None:
        """The pulled models (`/api/tags`); others get Ollama's 404 "model not found" on embed."""
        with self._lock:
            self._models = list(names)

    def set_context_tokens(self, tokens: int) -> None:
        """Context length in words: longer inputs are cut (`truncate` true/absent) or refused with 400."""
        with self._lock:
            self._context_tokens = tokens

    def reset(self) -> None:
        """Back to a healthy default server with zeroed counters (the port stays)."""
        with self._lock:
            self._models = list(DEFAULT_MODELS)
            self._dim = DEFAULT_DIM
            self._context_tokens = DEFAULT_CONTEXT_TOKENS
            self._delays.clear()
            self._fails.clear()
            self._overrides.clear()
            self._reset_counters()

    def reset_counters(self) -> None:
        with self._lock:
            self._reset_counters()

    def _reset_counters(self) -> None:
        self._requests: Counter[str] = Counter()
        self._texts_embedded = 0
        self._truncated = 0
        self._unprefixed = 0
        self._batch_sizes: list[int] = []
        self._all_inputs: list[str] = []
        self._last_inputs: list[str] = []
        self._last_body: Any = None

    # -- observations --------------------------------------------------------------------------------------

    @property
    def requests(self) -> dict[str, int]:
        """Requests received per path ("/api/embed", "/api/tags", ...), counted on arrival."""
        with self._lock:
            return dict(self._requests)

    def request_count(self, path: str) -> int:
        with self._lock:
            return self._requests[path]

    @property
    def texts_embedded(self) -> int:
        """Texts embedded successfully, over both embedding endpoints."""
        with self._lock:
            return self._texts_embedded

    @property
    def truncated(self) -> int:
        """Texts cut to the context length."""
        with self._lock:
            return self._truncated

    @property
    def unprefixed(self) -> int:
        """Texts embedded without a nomic task prefix (a bridge bug if ever non-zero)."""
        with self._lock:
            return self._unprefixed

    @property
    def batch_sizes(self) -> list[int]:
        """Number of inputs of each successful `/api/embed` request, in order."""
        with self._lock:
            return list(self._batch_sizes)

    @property
    def last_inputs(self) -> list[str]:
        """The inputs of the last successful embedding request, exactly as received (with prefixes)."""
        with self._lock:
            return list(self._last_inputs)

    @property
    def all_inputs(self) -> list[str]:
        """Every input embedded since the last reset, in order."""
        with self._lock:
            return list(self._all_inputs)

    @property
    def last_body(self) -> Any:
        """The decoded JSON body of the last POST (whatever happened to it)."""
        with self._lock:
            return self._last_body

    # -- request handling ----------------------------------------------------------------------------------

    def _handle(self, req: _Handler, method: str) -> None:
        path = req.path.split("?", 1)[0]
        raw = req.read_body() if method == "POST" else b""
        with self._lock:
            self._requests[path] += 1
            delay = self._delays.get(path, self._delays.get(None, 0.0))
            fail = self._fails.get(path, self._fails.get(None))
            override = self._overrides.get(path)
            halt = self._halt
        if delay and halt.wait(delay):
            req.close_connection = True  # stopped while "hanging": the client sees the connection drop
            return
        if fail is not None:
            status, message = fail
            req.send(status, {"error": message or f"fake ollama: injected HTTP {status}"})
            return
        if override is not None:
            req.send(*override)
            return

        body: Any = None
        if method == "POST":
            try:
                body = json.loads(raw or b"null")
            except ValueError as exc:
                req.send(400, {"error": f"invalid character in JSON body: {exc}"})
                return
            with self._lock:
                self._last_body = body

        route = (method, path)
        if route == ("GET", "/"):
            req.send(200, "Ollama is running")
        elif route == ("GET", "/api/version"):
            req.send(200, {"version": self.version})
        elif route == ("GET", "/api/tags"):
            req.send(200, {"models": [self._tag(name) for name in self._snapshot_models()]})
        elif route == ("POST", "/api/embed"):
            req.send(*self._embed(body))
        elif route == ("POST", "/api/embeddings"):
            req.send(*self._legacy_embeddings(body))
        else:
            req.send(404, "404 page not found")  # what Ollama's gin router answers for unknown paths

    def _snapshot_models(self) -> list[str]:
        with self._lock:
            return list(self._models)

    def _tag(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": name,
            "modified_at": "2025-01-01T00:00:00.000000000Z",
            "size": 274302450,
            "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "nomic-bert",
                "families": ["nomic-bert"],
                "parameter_size": "137M",
                "quantization_level": "F16",
            },
        }

    def _check_model(self, body: Any) -> tuple[int, Any] | None:
        if not isinstance(body, dict) or not isinstance(body.get("model"), str) or not body["model"]:
            return 400, {"error": "model is required"}
        wanted = _canonical(body["model"])
        if wanted not in {_canonical(m) for m in self._snapshot_models()}:
            return 404, {"error": f'model "{body["model"]}" not found, try pulling it first'}
        return None

    def _fit(self, text: str, truncate: bool) -> tuple[str, bool] | None:
        """Applies the context limit: returns the text to embed and whether it was cut, or None to refuse."""
        with self._lock:
            limit = self._context_tokens
        tokens = _WORD.findall(strip_prefix(text))
        if len(tokens) <= limit:
            return text, False
        if not truncate:
            return None
        return " ".join(tokens[:limit]), True

    def _embed(self, body: Any) -> tuple[int, Any]:
        started = time.perf_counter_ns()
        problem = self._check_model(body)
        if problem is not None:
            return problem
        raw_input = body.get("input")
        if isinstance(raw_input, str):
            inputs = [raw_input] if raw_input else []
        elif isinstance(raw_input, list) and all(isinstance(x, str) for x in raw_input):
            inputs = list(raw_input)
        else:
            return 400, {"error": "invalid input type"}
        truncate = body.get("truncate", True) is not False
        with self._lock:
            dim = self._dim
        wanted_dims = body.get("dimensions")
        if isinstance(wanted_dims, int) and 0 < wanted_dims < dim:
            dim = wanted_dims
        embeddings: list[list[float]] = []
        cut = 0
        for text in inputs:
            fitted = self._fit(text, truncate)
            if fitted is None:
                return 400, {"error": "the input length exceeds the context length"}
            cut += fitted[1]
            embeddings.append(fake_embedding(fitted[0], dim))
        self._record(inputs, cut, batch=True)
        return 200, {
            "model": body["model"],
            "embeddings": embeddings,
            "total_duration": time.perf_counter_ns() - started,
            "load_duration": 1000,
            "prompt_eval_count": sum(len(_WORD.findall(t)) for t in inputs),
        }

    def _legacy_embeddings(self, body: Any) -> tuple[int, Any]:
        """`/api/embeddings`: one prompt, an un-normalised vector, and a hard failure over the context."""
        problem = self._check_model(body)
        if problem is not None:
            return problem
        prompt = body.get("prompt", "")
        if not isinstance(prompt, str):
            return 400, {"error": "invalid prompt"}
        if not prompt:
            return 200, {"embedding": []}
        if self._fit(prompt, truncate=False) is None:
            return 500, {"error": "the input length exceeds the context length"}
        with self._lock:
            dim = self._dim
        self._record([prompt], 0, batch=False)
        return 200, {"embedding": fake_embedding(prompt, dim, normalise=False)}

    def _record(self, inputs: list[str], cut: int, *, batch: bool) -> None:
        with self._lock:
            self._texts_embedded += len(inputs)
            self._truncated += cut
            self._unprefixed += sum(1 for t in inputs if not _PREFIX.match(t))
            self._all_inputs.extend(inputs)
            self._last_inputs = list(inputs)
            if batch:
                self._batch_sizes.append(len(inputs))
