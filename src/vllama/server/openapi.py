"""The gateway's own OpenAPI description (served at ``/openapi.json``).

It describes what vLLama accepts and, above all, the error shape of each
dialect, so that a property-based fuzzer (schemathesis) can check every
answer: no 5xx, and every 4xx in its route's dialect. Request bodies are
described permissively where the gateway is (unknown fields pass), and
precisely where it validates (types of ``options``, ``stream``, ``think``).
"""

from __future__ import annotations

from typing import Any

from vllama import __version__

JSON = "application/json"

OLLAMA_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
    "additionalProperties": False,
}
OPENAI_ERROR: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "integer", "null"]},
            },
        }
    },
}

OPTIONS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "num_predict": {"type": "integer"},
        "temperature": {"type": "number"},
        "top_p": {"type": "number"},
        "top_k": {"type": "integer"},
        "min_p": {"type": "number"},
        "repeat_penalty": {"type": "number"},
        "presence_penalty": {"type": "number"},
        "frequency_penalty": {"type": "number"},
        "seed": {"type": "integer"},
        "stop": {"type": "array", "items": {"type": "string"}},
        "num_ctx": {"type": "integer"},
    },
}
MESSAGE: dict[str, Any] = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]},
        "content": {"type": "string"},
        "images": {"type": "array", "items": {"type": "string", "format": "byte"}},
        "tool_name": {"type": "string"},
    },
}
COMMON: dict[str, Any] = {
    "model": {"type": "string"},
    "stream": {"type": "boolean"},
    "options": OPTIONS,
    "keep_alive": {"oneOf": [{"type": "string"}, {"type": "number"}]},
    "format": {"oneOf": [{"type": "string", "enum": ["json"]}, {"type": "object"}]},
    "think": {"oneOf": [{"type": "boolean"}, {"type": "string"}]},
}


def _body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required}
    return {"required": True, "content": {JSON: {"schema": schema}}}


def _responses(error: dict[str, Any], *codes: int, ok: str = JSON) -> dict[str, Any]:
    answers: dict[str, Any] = {"200": {"description": "success", "content": {ok: {}}}}
    for code in codes:
        answers[str(code)] = {"description": "error", "content": {JSON: {"schema": error}}}
    return answers


def _op(summary: str, body: dict[str, Any] | None, responses: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = body
    return op


def openapi_document(models: list[str] | None = None) -> dict[str, Any]:
    """The description; ``models`` (the names served now) narrows ``model`` to
    what can succeed, so generated requests reach the engine, not just a 404."""
    model: dict[str, Any] = {"type": "string"}
    if models:
        model = {"type": "string", "enum": list(models)}
    ollama_errors = (400, 404, 413, 501, 502, 503, 504)
    openai_errors = (400, 404, 413, 502, 503, 504)
    ndjson = "application/x-ndjson"
    common = {**COMMON, "model": model}
    chat = _body({**common, "messages": {"type": "array", "items": MESSAGE}}, ["model"])
    generate = _body(
        {
            **COMMON,
            "prompt": {"type": "string"},
            "system": {"type": "string"},
            "suffix": {"type": "string"},
            "raw": {"type": "boolean"},
            "images": {"type": "array", "items": {"type": "string", "format": "byte"}},
        },
        ["model"],
    )
    embed = _body(
        {
            "model": model,
            "input": {
                "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
            },
            "truncate": {"type": "boolean"},
            "keep_alive": COMMON["keep_alive"],
        },
        ["model"],
    )
    oa_chat = _body(
        {
            "model": model,
            "stream": {"type": "boolean"},
            "messages": {"type": "array", "items": MESSAGE},
            "max_tokens": {"type": "integer"},
            "temperature": {"type": "number"},
        },
        ["model", "messages"],
    )
    oa_completion = _body(
        {
            "model": model,
            "stream": {"type": "boolean"},
            "prompt": {"type": "string"},
            "max_tokens": {"type": "integer"},
        },
        ["model", "prompt"],
    )
    oa_embed = _body({"model": model, "input": {"type": "string"}}, ["model", "input"])
    paths: dict[str, Any] = {
        "/": {
            "get": _op(
                "Liveness probe Ollama clients send",
                None,
                _responses(OLLAMA_ERROR, ok="text/plain"),
            )
        },
        "/api/version": {"get": _op("Ollama-compatible version", None, _responses(OLLAMA_ERROR))},
        "/api/chat": {
            "post": _op("Chat (Ollama)", chat, _responses(OLLAMA_ERROR, *ollama_errors, ok=ndjson))
        },
        "/api/generate": {
            "post": _op(
                "Generate (Ollama)", generate, _responses(OLLAMA_ERROR, *ollama_errors, ok=ndjson)
            )
        },
        "/api/embed": {
            "post": _op("Embed (Ollama)", embed, _responses(OLLAMA_ERROR, *ollama_errors))
        },
        "/api/tags": {"get": _op("Local models", None, _responses(OLLAMA_ERROR))},
        "/api/ps": {"get": _op("Running models", None, _responses(OLLAMA_ERROR))},
        "/api/show": {
            "post": _op(
                "Model details",
                _body({"model": model}, []),
                _responses(OLLAMA_ERROR, 400, 404),
            )
        },
        "/v1/chat/completions": {
            "post": _op(
                "Chat (OpenAI, relayed)",
                oa_chat,
                _responses(OPENAI_ERROR, *openai_errors, ok="text/event-stream"),
            )
        },
        "/v1/completions": {
            "post": _op(
                "Completions (OpenAI, relayed)",
                oa_completion,
                _responses(OPENAI_ERROR, *openai_errors),
            )
        },
        "/v1/embeddings": {
            "post": _op(
                "Embeddings (OpenAI, relayed)", oa_embed, _responses(OPENAI_ERROR, *openai_errors)
            )
        },
        "/v1/models": {"get": _op("Models (OpenAI)", None, _responses(OPENAI_ERROR))},
        "/health": {"get": _op("Gateway liveness", None, _responses(OLLAMA_ERROR))},
        "/ready": {"get": _op("Engine readiness", None, _responses(OLLAMA_ERROR, 503))},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "vLLama",
            "version": __version__,
            "description": "Ollama's API (translated) and OpenAI's (relayed) over vLLM.",
        },
        "paths": paths,
    }
