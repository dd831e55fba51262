"""OpenAI responses -> Ollama responses (spec §2.3, §3.2, §5).

Non-streaming answers, the load/unload shortcut answers, embeddings, and a
readable message from an engine error body. The streaming state machine is
``stream.OllamaStream``; it and ``Timings`` are re-exported here so callers
find every response-side name in one place.
"""

from __future__ import annotations

from typing import Any

import orjson

from vllama.translate.final import (
    Kind,
    Timings,
)
from vllama.translate.stream import OllamaStream

__all__ = [
    "Kind",
    "OllamaStream",
    "Timings",
    "embed_response",
    "embeddings_response",
    "load_response",
    "openai_error_message",
]

_ERROR_TEXT_LIMIT = 500


def load_response(kind: Kind, model: str, created_at: str, unload: bool) -> dict[str, Any]:
    """The answer to an empty prompt / empty messages (spec §2.4, §3.1)."""
    reason = "unload" if unload else "load"
    if kind == "chat":
        return {
            "model": model,
            "created_at": created_at,
            "message": {"role": "assistant", "content": ""},
            "done_reason": reason,
            "done": True,
        }
    return {
        "model": model,
        "created_at": created_at,
        "response": "",
        "done": True,
        "done_reason": reason,
    }


def embed_response(openai_resp: dict[str, Any], model: str, timings: Timings) -> dict[str, Any]:
    """``/v1/embeddings`` -> ``/api/embed`` (vectors in input order)."""
    data = sorted(openai_resp.get("data") or (), key=lambda d: d.get("index", 0))
    durations = timings.durations()
    out: dict[str, Any] = {
        "model": model,
        "embeddings": [d.get("embedding") for d in data],
        "total_duration": durations["total_duration"],
        "load_duration": durations["load_duration"],
    }
    usage = openai_resp.get("usage")
    if isinstance(usage, dict) and usage.get("prompt_tokens"):
        out["prompt_eval_count"] = usage["prompt_tokens"]
    return out


def embeddings_response(openai_resp: dict[str, Any]) -> dict[str, Any]:
    """``/v1/embeddings`` -> legacy ``/api/embeddings`` (one vector)."""
    data = openai_resp.get("data") or []
    return {"embedding": data[0].get("embedding") if data else []}


def openai_error_message(body: bytes) -> str:
    """A readable message from an engine error body: an OpenAI error object,
    vLLM's flat ``{"message": ...}``, FastAPI's ``detail``, or the raw text."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        err = doc.get("error")
        nested = err.get("message") if isinstance(err, dict) else None
        if isinstance(nested, str):
            return nested
        if isinstance(err, str) and err:
            return err
        if isinstance(doc.get("message"), str):
            return str(doc["message"])
        detail = doc.get("detail")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list):
            return "; ".join(_detail_item(d) for d in detail)
    text = body.decode("utf-8", "replace").strip()
    if not text:
        return "the engine returned an error with an empty body"
    if len(text) > _ERROR_TEXT_LIMIT:
        return text[:_ERROR_TEXT_LIMIT] + "…"
    return text


def _detail_item(item: object) -> str:
    if not isinstance(item, dict):
        return str(item)
    loc = ".".join(str(p) for p in item.get("loc") or () if p != "body")
    msg = str(item.get("msg", ""))
    return f"{loc}: {msg}" if loc else msg
