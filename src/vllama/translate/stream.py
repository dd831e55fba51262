"""The streaming state machine: OpenAI chunks in, Ollama NDJSON objects out.

One ``OllamaStream`` per request. Text and reasoning deltas go out as soon as
they arrive; tool-call deltas are accumulated (vLLM streams the arguments as
string fragments) and sent whole in one ``done: false`` object when the
choice finishes, as Ollama does; the usage-only last chunk is remembered for
the final ``done: true`` object. The server owns time: it passes
``created_at`` per emission and the ``Timings`` at the end.
"""

from __future__ import annotations

from typing import Any

from vllama.translate.final import (
    Kind,
    Timings,
    chat_logprobs,
    completion_logprobs,
    final_object,
    ollama_tool_call,
    output_fields,
)


class OllamaStream:
    """Translate one OpenAI stream (chat or text completion) for ``kind``."""

    __slots__ = ("_finish_reason", "_first", "_kind", "_model", "_tools", "_usage")

    def __init__(self, kind: Kind, model: str) -> None:
        self._kind: Kind = kind
        self._model = model  # the name the client typed, echoed back
        self._tools: dict[int, dict[str, Any]] = {}
        self._usage: dict[str, Any] | None = None
        self._finish_reason: object = None
        self._first = False

    @property
    def first_token_seen(self) -> bool:
        """True once any output (text, reasoning, tool call) has arrived."""
        return self._first

    @property
    def usage(self) -> dict[str, Any] | None:
        """The last usage the engine reported (running, with continuous usage stats)."""
        return self._usage

    def feed(self, chunk: dict[str, Any], created_at: str) -> list[dict[str, Any]]:
        """One decoded engine chunk -> the Ollama objects to send now."""
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage
        out: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Ollama has no ``n``: only the first choice exists
            if "delta" in choice:
                delta = choice.get("delta") or {}
                content = delta.get("content") or ""
                thinking = delta.get("reasoning_content") or delta.get("reasoning") or ""
                logprobs = chat_logprobs(choice.get("logprobs"))
                self._add_tool_deltas(delta.get("tool_calls"))
            else:
                content = choice.get("text") or ""
                thinking = ""
                logprobs = completion_logprobs(choice.get("logprobs"))
            if content or thinking or logprobs:
                self._first = True
                out.append(self._emit(created_at, content, thinking, None, logprobs))
            finish = choice.get("finish_reason")
            if finish:
                self._finish_reason = finish
                calls = self._take_tool_calls()
                if calls:
                    out.append(self._emit(created_at, "", "", calls, None))
        return out

    def finish(self, timings: Timings, created_at: str) -> dict[str, Any]:
        """The final ``done: true`` object (any unflushed tool calls ride on it)."""
        return final_object(
            self._kind,
            self._model,
            created_at,
            finish_reason=self._finish_reason,
            usage=self._usage,
            timings=timings,
            tool_calls=self._take_tool_calls(),
        )

    def _add_tool_deltas(self, deltas: object) -> None:
        if not isinstance(deltas, list):
            return
        for position, delta in enumerate(deltas):
            if not isinstance(delta, dict):
                continue
            self._first = True
            index = delta.get("index", position)
            slot = self._tools.setdefault(index, {"id": None, "name": "", "arguments": []})
            if delta.get("id"):
                slot["id"] = delta["id"]
            fn = delta.get("function") or {}
            if fn.get("name"):
                slot["name"] += fn["name"]
            if fn.get("arguments"):
                slot["arguments"].append(fn["arguments"])

    def _take_tool_calls(self) -> list[dict[str, Any]]:
        calls = [
            ollama_tool_call(i, slot["id"], slot["name"], "".join(slot["arguments"]))
            for i, (_, slot) in enumerate(sorted(self._tools.items()))
        ]
        self._tools.clear()
        return calls

    def _emit(
        self,
        created_at: str,
        content: str,
        thinking: str,
        tool_calls: list[dict[str, Any]] | None,
        logprobs: list[dict[str, Any]] | None,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self._model, "created_at": created_at}
        out.update(output_fields(self._kind, content, thinking, tool_calls))
        out["done"] = False
        if logprobs:
            out["logprobs"] = logprobs
        return out


def merge_stream(kind: Kind, pieces: list[dict[str, Any]], final: dict[str, Any]) -> dict[str, Any]:
    """Fold the streamed objects into Ollama's single ``stream: false`` answer.

    The gateway always streams from the engine (to time the first token), so
    a non-streaming answer is this fold of the very objects a stream sends.
    """
    parts = [p.get("message", {}) for p in pieces] if kind == "chat" else pieces
    text_key = "content" if kind == "chat" else "response"
    text = "".join(str(p.get(text_key, "")) for p in parts)
    thinking = "".join(str(p.get("thinking", "")) for p in parts)
    calls = [call for p in parts for call in p.get("tool_calls", [])]
    calls += final.get("message", final).get("tool_calls", [])
    logprobs = [lp for p in pieces for lp in p.get("logprobs", [])]
    merged = dict(final)
    merged.pop("tool_calls", None)
    merged.update(output_fields(kind, text, thinking, calls or None))
    if logprobs:
        merged["logprobs"] = logprobs
    return merged
