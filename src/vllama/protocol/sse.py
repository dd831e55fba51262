"""Server-sent events: decode the engine's OpenAI stream, encode our own.

vLLM streams ``data: {json}\\n\\n`` events ending with ``data: [DONE]``. TCP
reads split events anywhere, so decoding is an incremental state machine that
follows the WHATWG event-stream rules for the parts we need: any of ``\\r\\n``,
``\\n``, ``\\r`` ends a line; ``:`` starts a comment; several ``data`` lines
join with ``\\n``; other fields (``event``, ``id``, ``retry``) are ignored.
"""

from __future__ import annotations

DONE = b"[DONE]"


class SSEDecoder:
    """Feed raw bytes, get back the data payload of each complete event."""

    __slots__ = ("_buffer", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, data: bytes) -> list[bytes]:
        """Consume ``data``; return the payloads of the events it completed."""
        buf = self._buffer + data
        # A trailing CR may be the first half of a CRLF: keep it for later.
        tail = b""
        if buf.endswith(b"\r"):
            buf, tail = buf[:-1], b"\r"
        lines = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._buffer = lines.pop() + tail
        events: list[bytes] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(b"\n".join(self._data))
                    self._data = []
                continue
            if line[0] == 0x3A:  # b":" comment / keep-alive
                continue
            name, _, value = line.partition(b":")
            if name == b"data":
                self._data.append(value[1:] if value[:1] == b" " else value)
        return events


def encode_event(payload: bytes) -> bytes:
    """Frame ``payload`` as one SSE event (one ``data:`` line per line)."""
    if b"\n" not in payload and b"\r" not in payload:
        return b"data: " + payload + b"\n\n"
    lines = payload.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    return b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"
