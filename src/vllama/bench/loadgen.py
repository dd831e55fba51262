"""A load generator for the Ollama and OpenAI chat APIs.

Closed loop (the default): ``concurrency`` workers share one aiohttp session
(no connection limit); each sends its next request as soon as its previous one
ends, until ``requests`` have been sent or ``duration`` has passed. Fixed rate
(``rate`` requests/s, open loop): requests start on a fixed schedule whatever
the answers do, with at most ``concurrency`` in flight (a request due while all
are busy waits, and the level then falls behind its schedule). Per request it records
the start, the time to the first content-bearing event (NDJSON line or SSE
event with non-empty ``content``), the gaps between content-bearing events, the
end, the output tokens *as the target reports them* (Ollama ``eval_count``,
OpenAI ``usage.completion_tokens``; never counted from chunks) and any error.

The byte-level parsing (:class:`Recorder`) is pure and fed timestamped chunks,
so it is tested on transcripts; only :func:`run_level` does I/O.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import aiohttp
import orjson

from vllama.bench.prompts import Message, as_messages
from vllama.protocol.sse import DONE, SSEDecoder

Dialect = Literal["ollama", "openai"]
T = TypeVar("T")


@dataclass(frozen=True)
class Target:
    """One thing to measure: a base URL spoken to in one dialect."""

    name: str  #: label in reports, e.g. "direct", "gateway"
    url: str  #: base URL, e.g. "http://127.0.0.1:11434"
    dialect: Dialect  #: "ollama" -> POST /api/chat, "openai" -> POST /v1/chat/completions
    stream: bool
    api_key: str | None
    model: str
    #: send vLLM's ``ignore_eos`` so every answer has ``max_tokens`` tokens (OpenAI dialect
    #: only: Ollama's API has no such option)
    ignore_eos: bool = True
    #: what is known of the target's set-up (quantization, engine flags,
    #: ``OLLAMA_NUM_PARALLEL``, ...), recorded with the results
    info: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def endpoint(self) -> str:
        path = "/api/chat" if self.dialect == "ollama" else "/v1/chat/completions"
        return self.url.rstrip("/") + path


@dataclass
class Sample:
    """One request. Times are seconds since the level began (``perf_counter``)."""

    start: float
    end: float
    ttft: float | None  #: start -> first content; None for non-stream or no content
    gaps: list[float]  #: between consecutive content-bearing events
    output_tokens: int | None  #: the target's own count
    error: str | None = None
    reconnects: int = 0  #: times sent again after a stale keep-alive connection

    @property
    def latency(self) -> float:
        return self.end - self.start


@dataclass
class LevelResult:
    target: Target
    concurrency: int
    requests: int  #: asked for; ``len(samples)`` were sent
    max_tokens: int
    wall: float  #: seconds the level took, first start to last end
    samples: list[Sample] = field(default_factory=list)
    rate: float | None = None  #: requests/s scheduled (fixed rate); None for closed loop


@dataclass(frozen=True)
class Chunk:
    """What one decoded line/event/body tells the load generator."""

    content: bool = False  #: carries non-empty generated text
    tokens: int | None = None  #: output tokens the target reported
    error: str | None = None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _error_text(value: object) -> str:
    if isinstance(value, dict):
        return str(value.get("message", value))
    return str(value)


def ollama_chunk(obj: object) -> Chunk:
    """One Ollama ``/api/chat`` object (a stream line or a whole non-stream body)."""
    if not isinstance(obj, dict):
        return Chunk(error=f"not an object: {obj!r:.80}")
    if "error" in obj:
        return Chunk(error=_error_text(obj["error"]))
    message = obj.get("message")
    content = isinstance(message, dict) and bool(message.get("content"))
    return Chunk(content=content, tokens=_int(obj.get("eval_count")))


def openai_chunk(obj: object) -> Chunk:
    """One OpenAI chat completion (chunk): ``delta``/``message`` content, ``usage``."""
    if not isinstance(obj, dict):
        return Chunk(error=f"not an object: {obj!r:.80}")
    if "error" in obj:
        return Chunk(error=_error_text(obj["error"]))
    content = False
    for choice in obj.get("choices") or ():
        if isinstance(choice, dict):
            part = choice.get("delta") or choice.get("message") or {}
            content = content or (isinstance(part, dict) and bool(part.get("content")))
    usage = obj.get("usage")
    tokens = _int(usage.get("completion_tokens")) if isinstance(usage, dict) else None
    return Chunk(content=content, tokens=tokens)


def _loads(payload: bytes) -> object:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return f"bad JSON {payload[:80]!r}"


class Recorder:
    """Turns one response's timestamped bytes into a :class:`Sample`.

    ``feed`` takes stream bytes as they arrive (NDJSON for Ollama, SSE for
    OpenAI); ``feed_body`` takes a whole non-stream body. All times are
    ``perf_counter`` values; :meth:`finish` makes them relative to ``origin``.
    """

    def __init__(self, dialect: Dialect, start: float) -> None:
        self.dialect = dialect
        self.start = start
        self.first: float | None = None
        self.last: float | None = None
        self.gaps: list[float] = []
        self.tokens: int | None = None
        self.error: str | None = None
        self.reconnects = 0
        self._sse = SSEDecoder()
        self._buffer = b""
        self._arrived = start  # when the last bytes came

    def _payloads(self, data: bytes) -> list[bytes]:
        if self.dialect == "openai":
            return [p for p in self._sse.feed(data) if p != DONE]
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()
        return [line for line in lines if line.strip()]

    def _take(self, now: float, chunk: Chunk) -> None:
        if chunk.error is not None and self.error is None:
            self.error = chunk.error
        if chunk.tokens is not None:
            self.tokens = chunk.tokens
        if chunk.content:
            if self.first is None:
                self.first = now
            elif self.last is not None:
                self.gaps.append(now - self.last)
            self.last = now

    def _decode(self, payload: bytes) -> Chunk:
        obj = _loads(payload)
        return ollama_chunk(obj) if self.dialect == "ollama" else openai_chunk(obj)

    def feed(self, now: float, data: bytes) -> None:
        self._arrived = now
        for payload in self._payloads(data):
            self._take(now, self._decode(payload))

    def feed_body(self, body: bytes) -> None:
        chunk = self._decode(body)
        self._take(0.0, Chunk(tokens=chunk.tokens, error=chunk.error))

    def fail(self, message: str) -> None:
        self.error = self.error or message

    def finish(self, now: float, origin: float = 0.0) -> Sample:
        if self._buffer.strip():  # an unterminated last NDJSON line still counts
            self._take(self._arrived, self._decode(self._buffer))
            self._buffer = b""
        ttft = None if self.first is None else self.first - self.start
        return Sample(
            start=self.start - origin,
            end=now - origin,
            ttft=ttft,
            gaps=self.gaps,
            output_tokens=self.tokens,
            error=self.error,
            reconnects=self.reconnects,
        )


def request_body(
    target: Target, prompt: str | Sequence[Message], max_tokens: int
) -> dict[str, Any]:
    """Temperature 0; ``ignore_eos`` where the dialect allows it (vLLM's OpenAI
    extension, also honoured by llama.cpp's server) unless the target opts out.
    Ollama has no such option: ``num_predict`` caps the answer and the prompt must
    ask for a long one; the report shows the real ``eval_count``."""
    messages = as_messages(prompt)
    if target.dialect == "ollama":
        options = {"temperature": 0, "num_predict": max_tokens}
        return {"model": target.model, "messages": messages, "stream": target.stream,
                "options": options}  # fmt: skip
    body: dict[str, Any] = {
        "model": target.model,
        "messages": messages,
        "stream": target.stream,
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if target.ignore_eos:
        body["ignore_eos"] = True
    if target.stream:
        body["stream_options"] = {"include_usage": True}
    return body


def new_session() -> aiohttp.ClientSession:
    """One session for a whole run: no connection limit, no total timeout."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=600),
    )


# A pooled keep-alive connection the server had already closed fails like this
# before any answer (llama.cpp's server closes after each streamed response).
_STALE = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
ATTEMPTS = 3


async def _one(
    session: aiohttp.ClientSession, target: Target, body: bytes, headers: dict[str, str]
) -> Recorder:
    """One request. Sent again (on a new connection, same start time) only when
    the connection failed before any answer, at most ``ATTEMPTS`` times in all."""
    rec = Recorder(target.dialect, time.perf_counter())
    for attempt in range(1, ATTEMPTS + 1):
        answered = False
        try:
            async with session.post(target.endpoint, data=body, headers=headers) as resp:
                answered = True
                if resp.status != 200:
                    text = (await resp.read())[:200].decode(errors="replace")
                    rec.fail(f"HTTP {resp.status}: {text}")
                elif target.stream:
                    async for data in resp.content.iter_any():
                        rec.feed(time.perf_counter(), data)
                else:
                    rec.feed_body(await resp.read())
        except _STALE as exc:
            if not answered and attempt < ATTEMPTS:
                rec.reconnects += 1
                continue
            rec.fail(f"{type(exc).__name__}: {exc}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            rec.fail(f"{type(exc).__name__}: {exc}")
        return rec
    return rec


async def run_level(
    target: Target,
    concurrency: int,
    requests: int,
    prompt_set: Sequence[str | Sequence[Message]],
    max_tokens: int,
    *,
    duration: float | None = None,
    rate: float | None = None,
    session: aiohttp.ClientSession | None = None,
    on_sample: Callable[[Sample], None] | None = None,
) -> LevelResult:
    """Send ``requests`` requests (or as many as start within ``duration``
    seconds), closed loop from ``concurrency`` workers or, with ``rate``, on a
    fixed schedule with at most ``concurrency`` in flight; prompts are used
    round-robin. ``on_sample`` sees each sample as it completes."""
    if concurrency < 1 or not prompt_set:
        raise ValueError("need concurrency >= 1 and at least one prompt")
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    bodies = [orjson.dumps(request_body(target, p, max_tokens)) for p in prompt_set]
    headers = {"content-type": "application/json"}
    if target.api_key:
        headers["authorization"] = f"Bearer {target.api_key}"
    samples: list[Sample] = []
    origin = time.perf_counter()
    deadline = origin + duration if duration else math.inf

    async def send(http: aiohttp.ClientSession, i: int) -> None:
        rec = await _one(http, target, bodies[i % len(bodies)], headers)
        sample = rec.finish(time.perf_counter(), origin)
        samples.append(sample)
        if on_sample is not None:
            on_sample(sample)

    async def closed_loop(http: aiohttp.ClientSession) -> None:
        counter = itertools.count()

        async def worker() -> None:
            while (i := next(counter)) < requests and time.perf_counter() < deadline:
                await send(http, i)

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def fixed_rate(http: aiohttp.ClientSession, per_second: float) -> None:
        slots = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            try:
                await send(http, i)
            finally:
                slots.release()

        tasks = []
        for i in range(requests):
            await asyncio.sleep(max(0.0, origin + i / per_second - time.perf_counter()))
            await slots.acquire()
            if time.perf_counter() >= deadline:
                slots.release()
                break
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)

    http = session or new_session()
    try:
        await (closed_loop(http) if rate is None else fixed_rate(http, rate))
    finally:
        if session is None:
            await http.close()
    wall = time.perf_counter() - origin
    return LevelResult(target, concurrency, requests, max_tokens, wall, samples, rate)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on uvloop when it is installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    result: T = uvloop.run(coro)
    return result
