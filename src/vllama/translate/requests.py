"""Ollama ``/api/chat``, ``/api/generate`` and embed requests -> OpenAI calls.

Pure functions from a decoded Ollama body to the engine call we will make
(path, body, streaming). Chat stays chat so the model's own template is used;
``/api/generate`` becomes a one-turn chat unless it is ``raw`` or has a
``suffix``, which need the plain ``/v1/completions`` endpoint. Missing
``model`` is the caller's business (the two endpoints answer it differently).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from vllama.errors import BadRequest
from vllama.protocol.ollama import go_quote, parse_think
from vllama.translate.messages import map_messages, user_content
from vllama.translate.options import map_options

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"

# vLLM's ``reasoning_effort`` knows low/medium/high; Ollama adds "max".
_EFFORT = {"low": "low", "medium": "medium", "high": "high", "max": "high"}


@dataclass(frozen=True)
class UpstreamCall:
    """One request to the engine: where, what, and whether it streams."""

    path: str
    body: dict[str, Any]
    stream: bool


def _string(req: dict[str, Any], key: str) -> str:
    value = req.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string", param=key)
    return value


def _stream(req: dict[str, Any]) -> bool:
    value = req.get("stream")
    if value is None:
        return True
    if not isinstance(value, bool):
        raise BadRequest("stream must be a boolean", param="stream")
    return value


def _response_format(fmt: object) -> dict[str, Any] | None:
    """Ollama ``format`` -> OpenAI ``response_format`` (spec §2.5)."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "schema", "schema": fmt}}
    raw = orjson.dumps(fmt).decode()
    raise BadRequest(
        f'invalid format: {go_quote(raw)}; expected "json" or a valid JSON schema',
        param="format",
    )


def _top_logprobs(req: dict[str, Any]) -> int:
    value = req.get("top_logprobs")
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise BadRequest("top_logprobs must be an integer", param="top_logprobs")
    if not 0 <= value <= 20:
        raise BadRequest("top_logprobs must be between 0 and 20", param="top_logprobs")
    return int(value)


def _common(
    req: dict[str, Any], served_model: str, default_options: dict[str, Any] | None
) -> tuple[dict[str, Any], bool]:
    """The body fields chat and completions share, and whether to stream."""
    options = req.get("options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("options must be an object", param="options")
    merged = dict(default_options or {})
    merged.update({k: v for k, v in (options or {}).items() if v is not None})
    body: dict[str, Any] = {"model": served_model}
    body.update(map_options(merged))
    fmt = _response_format(req.get("format"))
    if fmt is not None:
        body["response_format"] = fmt
    stream = _stream(req)
    body["stream"] = stream
    if stream:
        body["stream_options"] = {"include_usage": True}
    return body, stream


def _chat_extras(body: dict[str, Any], req: dict[str, Any]) -> None:
    think = parse_think(req.get("think"))
    if think is not None:
        body["chat_template_kwargs"] = {"enable_thinking": bool(think)}
        if isinstance(think, str):
            body["reasoning_effort"] = _EFFORT[think]
    tools = req.get("tools")
    if tools:
        if not isinstance(tools, list):
            raise BadRequest("tools must be an array", param="tools")
        body["tools"] = tools
    top = _top_logprobs(req)
    if req.get("logprobs") is True:
        body["logprobs"] = True
        if top:
            body["top_logprobs"] = top


def chat_request(
    req: dict[str, Any], served_model: str, *, default_options: dict[str, Any] | None = None
) -> UpstreamCall:
    """``/api/chat`` -> ``/v1/chat/completions``."""
    messages = map_messages(req.get("messages"))
    body, stream = _common(req, served_model, default_options)
    body["messages"] = messages
    _chat_extras(body, req)
    return UpstreamCall(CHAT_PATH, body, stream)


def generate_request(
    req: dict[str, Any], served_model: str, *, default_options: dict[str, Any] | None = None
) -> UpstreamCall:
    """``/api/generate`` -> a one-turn chat, or ``/v1/completions`` for
    ``raw`` prompts and fill-in-the-middle ``suffix``."""
    prompt = _string(req, "prompt")
    system = _string(req, "system")
    suffix = _string(req, "suffix")
    raw = req.get("raw") is True
    if raw and (system or _string(req, "template") or req.get("context")):
        raise BadRequest("raw mode does not support template, system, or context")
    images = req.get("images")
    if raw or suffix:
        parse_think(req.get("think"))  # validated even where it cannot apply
        if images:
            raise BadRequest("images are not supported with raw or suffix", param="images")
        body, stream = _common(req, served_model, default_options)
        body["prompt"] = prompt
        if suffix:
            body["suffix"] = suffix
        top = _top_logprobs(req)
        if req.get("logprobs") is True:
            body["logprobs"] = top  # completions: the number of alternatives
        return UpstreamCall(COMPLETIONS_PATH, body, stream)
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": user_content(prompt, images)})
    body, stream = _common(req, served_model, default_options)
    body["messages"] = messages
    _chat_extras(body, req)
    return UpstreamCall(CHAT_PATH, body, stream)


def is_load_request(kind: Literal["chat", "generate"], req: dict[str, Any]) -> bool:
    """True when Ollama would only load (or, with ``keep_alive: 0``, unload)
    the model: an empty ``prompt`` for generate, no ``messages`` for chat."""
    if kind == "generate":
        return req.get("prompt") in (None, "")
    return req.get("messages") in (None, [])


def embed_request(req: dict[str, Any], served_model: str) -> dict[str, Any]:
    """``/api/embed`` -> the ``/v1/embeddings`` body.

    ``input`` is always a list; an empty list means Ollama's empty answer
    (``{"embeddings": []}``) and the engine must not be called.
    """
    value = req.get("input")
    if value is None:
        inputs: list[str] = []
    elif isinstance(value, str):
        inputs = [value] if value else []
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        inputs = list(value)
    else:
        raise BadRequest("invalid input type", param="input")
    body: dict[str, Any] = {"model": served_model, "input": inputs}
    dimensions = req.get("dimensions")
    if dimensions is not None:
        body["dimensions"] = dimensions
    truncate = req.get("truncate")
    if truncate is not None and not isinstance(truncate, bool):
        raise BadRequest("truncate must be a boolean", param="truncate")
    if truncate is not False:  # Ollama truncates by default; -1 = the model's window
        body["truncate_prompt_tokens"] = -1
    return body


def embeddings_request(req: dict[str, Any], served_model: str) -> dict[str, Any]:
    """Legacy ``/api/embeddings`` (one ``prompt``) -> the ``/v1/embeddings``
    body; ``input`` is ``[]`` for an empty prompt (answer ``{"embedding": []}``)."""
    prompt = _string(req, "prompt")
    return {"model": served_model, "input": [prompt] if prompt else []}
