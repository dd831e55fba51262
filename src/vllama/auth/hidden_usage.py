"""Usage asked of the engine on a client's behalf, then hidden from it again.

An OpenAI stream carries token counts only when the client asks for them
(``stream_options.include_usage``); a stream without them would escape the
tokens-per-minute limit and be counted as zero tokens. So when the relay must
meter a stream whose client did not ask, it asks the engine anyway
(``ask_usage``) and passes the engine's bytes through ``HiddenUsage``, which
hands the counts to the meter and gives the client exactly the bytes it
would have had without the option. The option changes three things in a vLLM
stream, which the filter undoes:

- a last chunk ``{"choices": [], "usage": {...}}`` is added: dropped;
- ``system_fingerprint`` moves from the chunks that carry a ``finish_reason``
  to that usage chunk (vLLM 0.32): a finishing chunk without one is held back
  until the usage chunk names the fingerprint, then sent with it put back in
  its place (the last field; with one choice, the usage chunk is the very
  next event, so nothing waits longer than one event);
- older vLLM put ``"usage":null`` on every chunk: removed.

Events are otherwise relayed byte for byte, each as soon as it is complete:
no re-serialisation, no buffering beyond one SSE event.
"""

from __future__ import annotations

from typing import Any

import orjson

from vllama.auth.metering import Meter

_END = b"\n\n"
_DATA = b"data:"
_NULL_USAGE = (b',"usage":null', b'"usage":null,')


def ask_usage(body: dict[str, Any]) -> dict[str, Any] | None:
    """The stream request to send instead of ``body`` so that the engine
    reports usage, or None when the client asked for it itself (or sent
    ``stream_options`` the engine must judge as they are)."""
    options = body.get("stream_options")
    if options is None:
        return dict(body, stream_options={"include_usage": True})
    if not isinstance(options, dict) or options.get("include_usage") not in (None, False):
        return None
    asked = dict(options, include_usage=True)
    if asked.get("continuous_usage_stats"):  # off before: include_usage gated it
        asked["continuous_usage_stats"] = False
    return dict(body, stream_options=asked)


def _finishes(event: dict[str, Any]) -> bool:
    choices = event.get("choices")
    return isinstance(choices, list) and any(
        isinstance(c, dict) and c.get("finish_reason") is not None for c in choices
    )


def _without_null_usage(event: bytes) -> bytes:
    for field in _NULL_USAGE:
        at = event.rfind(field)
        if at >= 0:
            return event[:at] + event[at + len(field) :]
    return event


def _with_fingerprint(event: bytes, fingerprint: str) -> bytes:
    """``"system_fingerprint"`` as vLLM writes it: the last field of the chunk."""
    at = event.rfind(b"}")
    return event[:at] + b',"system_fingerprint":' + orjson.dumps(fingerprint) + event[at:]


class HiddenUsage:
    """One stream's filter: engine bytes in (any split), client bytes out."""

    __slots__ = ("_held", "_meter", "_partial")

    def __init__(self, meter: Meter) -> None:
        self._meter = meter
        self._partial = b""
        #: Events held back after a finishing chunk, each with "needs the fingerprint".
        self._held: list[tuple[bytes, bool]] = []

    def feed(self, chunk: bytes) -> bytes:
        """The bytes to relay now for one engine chunk (maybe none)."""
        self._meter.feed(chunk)  # for a stream cut before its usage event
        data = self._partial + chunk if self._partial else chunk
        out: list[bytes] = []
        start = 0
        while (end := data.find(_END, start)) >= 0:
            out.append(self._event(data[start : end + 2]))
            start = end + 2
        self._partial = data[start:]
        return b"".join(out)

    def close(self) -> bytes:
        """The stream ended or broke: whatever is still held, as it came."""
        rest = self._release(None) + self._partial
        self._partial = b""
        return rest

    def _event(self, event: bytes) -> bytes:
        decoded: Any = None
        if event.startswith(_DATA):
            try:
                decoded = orjson.loads(event[5:])
            except orjson.JSONDecodeError:
                decoded = None
        if not isinstance(decoded, dict):  # [DONE], an error, a comment: the end is near
            return self._release(None) + event
        if decoded.get("choices") == [] and isinstance(decoded.get("usage"), dict):
            self._meter.usage(decoded["usage"])
            fingerprint = decoded.get("system_fingerprint")
            return self._release(fingerprint if isinstance(fingerprint, str) else None)
        if "usage" in decoded and decoded["usage"] is None:
            event = _without_null_usage(event)
        if _finishes(decoded) and "system_fingerprint" not in decoded:
            self._held.append((event, True))
            return b""
        if self._held:
            self._held.append((event, False))
            return b""
        return event

    def _release(self, fingerprint: str | None) -> bytes:
        if not self._held:
            return b""
        held, self._held = self._held, []
        return b"".join(
            _with_fingerprint(event, fingerprint) if needs and fingerprint else event
            for event, needs in held
        )
