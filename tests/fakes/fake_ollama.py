"""A fake Ollama server speaking Ollama's native API, for routing tests.

    python tests/fakes/fake_ollama.py --port P --model NAME [flags]

``GET /`` ("Ollama is running"), ``GET /api/tags``, ``POST /api/chat`` and
``/api/generate`` (NDJSON by default, one JSON object with ``stream:false``),
and the OpenAI-compatible ``POST /v1/chat/completions`` that Ollama also
serves. Shapes follow Ollama 0.12: ``{"error": "..."}`` errors, a final line
with ``done``, ``done_reason`` and the counts and durations in nanoseconds.
``GET /fake/requests`` returns the bodies received, so tests can see what the
gateway sent. Only aiohttp and the stdlib.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

WORDS = ("Ahoy", "from", "the", "fake", "Ollama", "server", "and", "its", "many", "words")
DEFAULT_TOKENS = 8


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", default="fake-ollama:latest")
    p.add_argument("--token-delay", type=float, default=0.0)
    p.add_argument("--stall-before-first-byte", type=float, default=0.0, metavar="S")
    p.add_argument("--error-mid-stream", type=int, metavar="N", help="abort after N tokens")
    p.add_argument("--status", type=int, default=0, help="answer every generation with it")
    return p.parse_args(argv)


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Fake:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.received: list[dict[str, Any]] = []


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


async def generation(request: web.Request, kind: str) -> web.StreamResponse:
    fake: Fake = request.app["fake"]
    body = await request.json()
    fake.received.append({"path": request.path, "body": body})
    if fake.args.status:
        return web.json_response({"error": "fake failure"}, status=fake.args.status)
    if body.get("model") != fake.args.model:
        return web.json_response({"error": f"model '{body.get('model')}' not found"}, status=404)
    await asyncio.sleep(fake.args.stall_before_first_byte)
    limit = (body.get("options") or {}).get("num_predict", DEFAULT_TOKENS)
    tokens = [
        WORDS[i % len(WORDS)] if i == 0 else " " + WORDS[i % len(WORDS)] for i in range(limit)
    ]
    started = time.monotonic_ns()

    def piece(text: str, done: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"model": fake.args.model, "created_at": now()}
        if kind == "chat":
            out["message"] = {"role": "assistant", "content": text}
        else:
            out["response"] = text
        out["done"] = done
        return out

    def final() -> dict[str, Any]:
        out = piece("", True)
        elapsed = time.monotonic_ns() - started
        out.update(done_reason="length" if "num_predict" in (body.get("options") or {}) else "stop")
        out.update(total_duration=elapsed, load_duration=1000, prompt_eval_count=3)
        out.update(prompt_eval_duration=1000, eval_count=len(tokens), eval_duration=elapsed)
        return out

    if body.get("stream") is False:
        await asyncio.sleep(fake.args.token_delay * len(tokens))
        answer = piece("".join(tokens), True)
        answer.update({k: v for k, v in final().items() if k not in answer})
        return web.json_response(answer)
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    for i, token in enumerate(tokens):
        if fake.args.error_mid_stream is not None and i == fake.args.error_mid_stream:
            assert request.transport is not None
            request.transport.abort()
            return response
        if i:
            await asyncio.sleep(fake.args.token_delay)
        await response.write(line(piece(token, False)))
    await response.write(line(final()))
    await response.write_eof()
    return response


async def chat(request: web.Request) -> web.StreamResponse:
    return await generation(request, "chat")


async def generate(request: web.Request) -> web.StreamResponse:
    return await generation(request, "generate")


async def openai_chat(request: web.Request) -> web.StreamResponse:
    """Ollama's OpenAI-compatible endpoint, streamed or not."""
    fake: Fake = request.app["fake"]
    body = await request.json()
    fake.received.append({"path": request.path, "body": body})
    if fake.args.status:
        error = {"message": "fake failure", "type": "api_error", "param": None, "code": None}
        return web.json_response({"error": error}, status=fake.args.status)
    if body.get("model") != fake.args.model:  # Ollama's wording on its /v1 routes
        message = f'model "{body.get("model")}" not found, try pulling it first'
        error = {"message": message, "type": "api_error", "param": None, "code": None}
        return web.json_response({"error": error}, status=404)
    base = {"id": "chatcmpl-1", "created": int(time.time()), "model": fake.args.model}
    text = " ".join(WORDS[:DEFAULT_TOKENS])
    if not body.get("stream"):
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return web.json_response({**base, "object": "chat.completion", "choices": [choice]})
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for word in WORDS[:DEFAULT_TOKENS]:
        delta = {"index": 0, "delta": {"content": word}, "finish_reason": None}
        event = {**base, "object": "chat.completion.chunk", "choices": [delta]}
        await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def tags(request: web.Request) -> web.StreamResponse:
    fake: Fake = request.app["fake"]
    model = {"name": fake.args.model, "model": fake.args.model, "modified_at": now(), "size": 1}
    return web.json_response({"models": [model]})


async def received(request: web.Request) -> web.StreamResponse:
    fake: Fake = request.app["fake"]
    return web.json_response(fake.received)


def make_app(fake: Fake) -> web.Application:
    app = web.Application()
    app["fake"] = fake
    app.router.add_get("/", lambda _r: web.Response(text="Ollama is running"))
    app.router.add_get("/api/tags", tags)
    app.router.add_post("/api/chat", chat)
    app.router.add_post("/api/generate", generate)
    app.router.add_post("/v1/chat/completions", openai_chat)
    app.router.add_get("/fake/requests", received)
    return app


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    runner = web.AppRunner(make_app(Fake(args)), handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    print(f"INFO fake ollama on http://{args.host}:{args.port} model={args.model}", flush=True)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve(parse_args(sys.argv[1:])))
