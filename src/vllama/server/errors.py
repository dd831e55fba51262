"""Rendering the one error tree in the caller's dialect, at the edge.

The dialect is decided by path: ``/v1/*`` speaks OpenAI, everything else
Ollama. Handlers only raise; this module alone knows the two wire shapes.
"""

from __future__ import annotations

from typing import Literal

import orjson
from starlette.responses import Response

from vllama.errors import ModelNotFound, VllamaError

Dialect = Literal["ollama", "openai"]


def dialect_of(path: str) -> Dialect:
    return "openai" if path.startswith("/v1/") or path == "/v1" else "ollama"


def ollama_error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def openai_error_body(err: VllamaError) -> bytes:
    message = err.message
    if isinstance(err, ModelNotFound):
        message = f"The model `{err.name}` does not exist."
    return orjson.dumps(
        {
            "error": {
                "message": message,
                "type": err.openai_type,
                "param": err.param,
                "code": err.code if err.code is not None else err.status,
            }
        }
    )


def error_response(err: VllamaError, dialect: Dialect) -> Response:
    body = ollama_error_body(err.message) if dialect == "ollama" else openai_error_body(err)
    headers = {}
    if err.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(err.retry_after)))
    return Response(body, status_code=err.status, headers=headers, media_type="application/json")
