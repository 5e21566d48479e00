"""Embeddings for stored LLM messages: the Ollama client (and, next to it, the backfill worker).

Import from here rather than from the submodules; the names below are the stable surface."""

from oscbridge.embed.ollama import (
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
    prepare_text,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DOCUMENT_PREFIX",
    "MAX_INPUT_CHARS",
    "QUERY_PREFIX",
    "DimensionMismatch",
    "OllamaBadResponse",
    "OllamaClient",
    "OllamaError",
    "OllamaHealth",
    "OllamaModelMissing",
    "OllamaUnavailable",
    "batched",
    "prepare_text",
]
