"""Token counts from what the engine already sent, read without delaying it.

A ``Meter`` belongs to one model request. The Ollama path hands it the counts
of its final object; the OpenAI relay hands it a non-stream body, or shows it
each relayed stream chunk (it keeps references to the last 4 KB, no copies)
and, when the stream ends, decodes only the last event that names ``usage``.
Counts are recorded once. A stream cut before its usage event (the client
left, the engine broke) is charged the completion tokens it did relay, counted
as its events after the first (the role) and before ``[DONE]`` (vLLM sends a
token an event), so leaving early does
not make a stream free; other requests that end without counts are recorded
with zero tokens.
"""

from __future__ import annotations

from typing import Any

import orjson

from vllama.auth.principal import Principal

#: Bytes of a stream's end kept (by reference) to find its last usage event.
_TAIL_BYTES = 4096


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_counts(usage: Any) -> tuple[int, int]:
    """``(prompt_tokens, completion_tokens)`` of an OpenAI ``usage`` object."""
    if not isinstance(usage, dict):
        return 0, 0
    return _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))


def sse_usage(tail: bytes) -> tuple[int, int]:
    """The counts in the last complete SSE event of ``tail`` that carries ``"usage"``."""
    limit = len(tail)
    while True:
        at = tail.rfind(b'"usage"', 0, limit)
        start = tail.rfind(b"data:", 0, at) if at >= 0 else -1
        if start < 0:
            return 0, 0
        end = tail.find(b"\n", at)
        if end >= 0:
            try:
                event = orjson.loads(tail[start + 5 : end])
            except orjson.JSONDecodeError:
                event = None
            if isinstance(event, dict) and isinstance(event.get("usage"), dict):
                return usage_counts(event["usage"])
        limit = start


class Meter:
    __slots__ = ("_done", "_events", "_kept", "_last", "model", "principal")

    def __init__(self, principal: Principal, model: str) -> None:
        self.principal = principal
        self.model = model
        self._last: list[bytes] = []
        self._kept = 0
        self._events = 0
        self._done = False

    def tokens(self, prompt: int, completion: int) -> None:
        if not self._done:
            self._done = True
            self.principal.record(self.model, prompt, completion)

    def usage(self, usage: Any) -> None:
        self.tokens(*usage_counts(usage))

    def body(self, payload: bytes) -> None:
        """A whole non-stream OpenAI answer."""
        try:
            decoded = orjson.loads(payload)
        except orjson.JSONDecodeError:
            decoded = None
        self.usage(decoded.get("usage") if isinstance(decoded, dict) else None)

    def feed(self, chunk: bytes) -> None:
        """A relayed stream chunk (kept by reference while among the last 4 KB)."""
        self._events += chunk.count(b"\n\n")  # complete events (a chunk may split one)
        last = self._last
        last.append(chunk)
        self._kept += len(chunk)
        while self._kept - len(last[0]) >= _TAIL_BYTES:
            self._kept -= len(last.pop(0))

    def close(self) -> None:
        """The stream ended (or was cut): record what its last usage event said."""
        if not self._done:
            tail = b"".join(self._last)
            prompt, completion = sse_usage(tail)
            if not (prompt or completion):  # cut before its usage event
                completion = max(0, self._events - 1 - (b"data: [DONE]" in tail))
            self.tokens(prompt, completion)
            self._last = []
