"""Ollama's answer objects, shared by streaming and non-streaming paths.

The final ``done: true`` object, assistant messages, tool calls and logprobs
in Ollama's shape, and the server-measured ``Timings`` behind the duration
fields. Field order follows Ollama's Go structs and zero metrics are omitted
(``omitempty``), so our bytes look like Ollama's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from vllama.errors import UpstreamError

Kind = Literal["chat", "generate"]


@dataclass(slots=True)
class Timings:
    """Monotonic nanosecond stamps taken by the server for one request."""

    arrived_ns: int  # request received
    sent_ns: int  # engine request sent (scheduling/"load" is over)
    first_token_ns: int | None  # first generated output seen (None: nothing came)
    done_ns: int  # last byte from the engine

    def durations(self) -> dict[str, int]:
        """Ollama's duration fields, each at least 1 ns (Ollama omits zeros,
        and clients divide by ``eval_duration``)."""
        first = self.done_ns if self.first_token_ns is None else self.first_token_ns
        return {
            "total_duration": max(1, self.done_ns - self.arrived_ns),
            "load_duration": max(1, self.sent_ns - self.arrived_ns),
            "prompt_eval_duration": max(1, first - self.sent_ns),
            "eval_duration": max(1, self.done_ns - first),
        }


def done_reason(finish_reason: object) -> str:
    """OpenAI ``finish_reason`` -> Ollama ``done_reason``."""
    return "length" if finish_reason == "length" else "stop"


def parse_arguments(text: object) -> dict[str, Any]:
    """A tool call's JSON-string arguments -> the object Ollama sends."""
    if isinstance(text, dict):
        return text
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}
    try:
        value = orjson.loads(text) if isinstance(text, str | bytes) else None
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamError(f"engine returned malformed tool call arguments: {text!r:.200}")
    return value


def ollama_tool_call(index: int, call_id: object, name: object, args: object) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(call_id, str) and call_id:
        out["id"] = call_id
    out["function"] = {"index": index, "name": name or "", "arguments": parse_arguments(args)}
    return out


def chat_logprobs(logprobs: object) -> list[dict[str, Any]]:
    """OpenAI chat ``choice.logprobs`` -> Ollama's ``logprobs`` list."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return []
    out = []
    for item in content:
        entry = _token_logprob(item.get("token"), item.get("logprob"), item.get("bytes"))
        tops = [
            _token_logprob(t.get("token"), t.get("logprob"), t.get("bytes"))
            for t in item.get("top_logprobs") or ()
        ]
        if tops:
            entry["top_logprobs"] = tops
        out.append(entry)
    return out


def completion_logprobs(logprobs: object) -> list[dict[str, Any]]:
    """OpenAI completions ``choice.logprobs`` (parallel arrays) -> Ollama's list."""
    if not isinstance(logprobs, dict):
        return []
    tokens = logprobs.get("tokens") or []
    values = logprobs.get("token_logprobs") or []
    tops = logprobs.get("top_logprobs") or []
    out = []
    for i, token in enumerate(tokens):
        entry = _token_logprob(token, values[i] if i < len(values) else None, None)
        top = tops[i] if i < len(tops) else None
        if isinstance(top, dict) and top:
            entry["top_logprobs"] = [_token_logprob(t, lp, None) for t, lp in top.items()]
        out.append(entry)
    return out


def _token_logprob(token: object, logprob: object, raw: object) -> dict[str, Any]:
    text = token if isinstance(token, str) else ""
    entry: dict[str, Any] = {"token": text, "logprob": logprob if logprob is not None else 0.0}
    entry["bytes"] = raw if isinstance(raw, list) else list(text.encode())
    return entry


def final_object(
    kind: Kind,
    model: str,
    created_at: str,
    *,
    finish_reason: object,
    usage: object,
    timings: Timings,
    content: str = "",
    thinking: str = "",
    tool_calls: list[dict[str, Any]] | None = None,
    logprobs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The ``done: true`` object, in Ollama's field order."""
    out: dict[str, Any] = {"model": model, "created_at": created_at}
    out.update(output_fields(kind, content, thinking, tool_calls))
    reason = done_reason(finish_reason)
    if kind == "chat":
        out["done_reason"] = reason
        out["done"] = True
    else:
        out["done"] = True
        out["done_reason"] = reason
    usage = usage if isinstance(usage, dict) else {}
    durations = timings.durations()
    out["total_duration"] = durations["total_duration"]
    out["load_duration"] = durations["load_duration"]
    if usage.get("prompt_tokens"):
        out["prompt_eval_count"] = usage["prompt_tokens"]
    out["prompt_eval_duration"] = durations["prompt_eval_duration"]
    if usage.get("completion_tokens"):
        out["eval_count"] = usage["completion_tokens"]
    out["eval_duration"] = durations["eval_duration"]
    if logprobs:
        out["logprobs"] = logprobs
    return out


def output_fields(
    kind: Kind,
    content: str,
    thinking: str = "",
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What a chat (``message``) or generate (``response`` ...) object carries."""
    if kind == "chat":
        return {"message": message(content, thinking, tool_calls)}
    out: dict[str, Any] = {"response": content}
    if thinking:
        out["thinking"] = thinking
    if tool_calls:
        out["tool_calls"] = tool_calls
    return out


def message(
    content: str, thinking: str = "", tool_calls: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """An Ollama assistant message; optional fields only when non-empty."""
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking:
        msg["thinking"] = thinking
    if tool_calls:
        msg["tool_calls"] = tool_calls
    return msg
