"""A fake vLLM OpenAI server: starts in a blink, answers deterministically, and
misbehaves on request, so gateway and supervisor tests need no real engine.

    python tests/fakes/fake_engine.py --port P --api-key K --model NAME [flags]

Shapes follow vLLM 0.32: ``{"error": "Unauthorized"}`` on ``/v1`` without the
key (vLLM's auth middleware, not OpenAI's shape), ``{"error": {"message",
"type", "param", "code"}}`` for other errors, SSE ``data: {...}`` chunks with
the finish reason on the last token and a ``choices: []`` usage chunk when
``stream_options.include_usage`` is set (with ``continuous_usage_stats``, the
running usage on every chunk too). ``--fingerprint-mode custom
--fingerprint-value V`` stamps ``system_fingerprint`` as vLLM does: on the
chunk with the finish reason, or on the usage chunk instead when there is one
(vLLM's default mode is ``full``; the fake's is ``none``). Only aiohttp and
the stdlib.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

from aiohttp import web

WORDS = ("The", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "again")
DEFAULT_TOKENS = 16
EMBED_DIM = 16
GUARDED = ("/v1", "/v2", "/inference")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--api-key", default=os.environ.get("VLLM_API_KEY"))
    p.add_argument("--model", "--served-model-name", dest="model", default="fake-model")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--lora-modules", nargs="*", default=[], help="NAME=PATH: served names too")
    p.add_argument("--start-delay", type=float, default=0.0, help="/health 503 until then")
    p.add_argument("--token-delay", type=float, default=0.0)
    p.add_argument("--crash-after", type=float, help="os._exit(1) S seconds after ready")
    p.add_argument("--crash-marker", metavar="PATH", help="crash only if PATH is absent; create it")
    p.add_argument("--exit-on-start", action="store_true", help="print an OOM and exit 1")
    p.add_argument("--hang-on-start", action="store_true", help="never become healthy")
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--error-mid-stream", type=int, metavar="N", help="abort after N tokens")
    p.add_argument("--stall-before-first-byte", type=float, default=0.0, metavar="S")
    p.add_argument("--stall-after", metavar="N:S", help="sleep S seconds after N tokens")
    p.add_argument("--spawn-child", action="store_true", help="a sleeping child in our group")
    p.add_argument("--fingerprint-mode", choices=("custom", "none"), default="none")
    p.add_argument("--fingerprint-value", help="system_fingerprint in custom mode")
    # Started as a managed engine (tests/fakes/vllm-python), it also gets
    # vLLM's own flags (--enforce-eager, --dtype, ...): accept and ignore them.
    args, _unknown = p.parse_known_args(argv)
    return args


def error(status: int, message: str, err_type: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": err_type, "param": param, "code": status}}
    return web.json_response(body, status=status)


class Fake:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ready_at = time.monotonic() + args.start_delay
        self.running = 0
        stall = (args.stall_after or "").partition(":")
        self.stall_at = int(stall[0]) if stall[0] else None
        self.stall_for = float(stall[2] or 0)

    @property
    def fingerprint(self) -> str | None:
        custom = self.args.fingerprint_mode == "custom"
        return self.args.fingerprint_value if custom else None

    @property
    def ready(self) -> bool:
        return not self.args.hang_on_start and time.monotonic() >= self.ready_at

    def tokens(self, body: dict[str, Any], chat: bool) -> tuple[list[str], str]:
        limit = body.get("max_completion_tokens") if chat else None
        limit = body.get("max_tokens") if limit is None else limit
        count = DEFAULT_TOKENS if limit is None else int(limit)
        stops = body.get("stop") or []
        stops = [stops] if isinstance(stops, str) else stops
        out: list[str] = []
        for i in range(count):
            word = WORDS[i % len(WORDS)]
            if word in stops:
                return out, "stop"
            out.append(word if i == 0 else " " + word)
        return out, "stop" if limit is None else "length"

    def usage(self, prompt: int, completion: int) -> dict[str, int]:
        return {
            "prompt_tokens": prompt,
            "total_tokens": prompt + completion,
            "completion_tokens": completion,
        }


def count_words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(1 if isinstance(v, int) else count_words(v) for v in value)
    if isinstance(value, dict):
        return count_words(value.get("content")) + count_words(value.get("text"))
    return 0


@web.middleware
async def gate(request: web.Request, handler: Any) -> web.StreamResponse:
    fake: Fake = request.app["fake"]
    if not fake.ready:
        return web.json_response({"error": "engine starting"}, status=503)
    key = fake.args.api_key
    authorized = request.headers.get("Authorization", "") == f"Bearer {key}"
    if key and request.path.startswith(GUARDED) and not authorized:
        return web.json_response({"error": "Unauthorized"}, status=401)
    response: web.StreamResponse = await handler(request)
    return response


async def read_body(request: web.Request, fake: Fake) -> dict[str, Any] | web.Response:
    try:
        body = await request.json()
    except json.JSONDecodeError as exc:
        return error(400, f"Invalid JSON: {exc}", "BadRequestError")
    if not isinstance(body, dict):
        return error(400, "Request body must be an object", "BadRequestError")
    model = body.get("model")
    loras = [m.split("=", 1)[0] for m in fake.args.lora_modules]
    if model and model != fake.args.model and model not in loras:
        message = f"The model `{model}` does not exist. Valid aliases: {fake.args.model}."
        return error(404, message, "NotFoundError", "model")
    return body


def check_limits(body: dict[str, Any], prompt: int, max_model_len: int) -> str | None:
    """vLLM's own checks on the token budget, with its wording."""
    if prompt > max_model_len:
        return (
            f"This model's maximum context length is {max_model_len} tokens. However, your "
            f"request has {prompt} input tokens. Please reduce the length of the input messages."
        )
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        return f"max_tokens must be at least 1, got {limit}."
    if prompt + limit > max_model_len:
        return (
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {prompt + limit} tokens ({prompt} in the messages, {limit} in the "
            "completion). Please reduce the length of the messages or completion."
        )
    return None


async def generate(request: web.Request, chat: bool) -> web.StreamResponse:
    fake: Fake = request.app["fake"]
    body = await read_body(request, fake)
    if isinstance(body, web.Response):
        return body
    if chat and not isinstance(body.get("messages"), list):
        return error(400, "messages: Field required", "BadRequestError", "messages")
    prompt = count_words(body.get("messages") if chat else body.get("prompt"))
    problem = check_limits(body, prompt, fake.args.max_model_len)
    if problem is not None:
        return error(400, problem, "BadRequestError")
    tokens, finish = fake.tokens(body, chat)
    base = {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": fake.args.model,
    }
    fake.running += 1
    try:
        await asyncio.sleep(fake.args.stall_before_first_byte)
        if body.get("stream"):
            options = body.get("stream_options") or {}
            usage = isinstance(options, dict) and bool(options.get("include_usage"))
            running = usage and bool(options.get("continuous_usage_stats"))
            flags = (usage, running)
            return await stream(request, fake, base, tokens, finish, prompt, chat, flags)
        await asyncio.sleep(fake.args.token_delay * len(tokens))
        text = "".join(tokens)
        choice: dict[str, Any] = {"index": 0}
        if chat:
            base["object"] = "chat.completion"
            choice["message"] = {"role": "assistant", "content": text, "refusal": None}
            choice["message"].update(annotations=None, audio=None, function_call=None)
            choice["message"]["reasoning"] = None
        else:
            choice["text"] = text
        choice.update(logprobs=None, finish_reason=finish, stop_reason=None, token_ids=None)
        usage = {**fake.usage(prompt, len(tokens)), "prompt_tokens_details": None}
        result = {**base, "choices": [choice], "service_tier": None}
        result.update(system_fingerprint=None, usage=usage, prompt_logprobs=None)
        return web.json_response(result)
    finally:
        fake.running -= 1


def chunk(base: dict[str, Any], chat: bool, text: str, finish: str | None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0}
    if chat:
        choice["delta"] = {"content": text}
    else:
        choice["text"] = text
    choice.update(logprobs=None, finish_reason=finish)
    if not chat:
        choice["stop_reason"] = None
    return {**base, "choices": [choice]}


async def stream(
    request: web.Request,
    fake: Fake,
    base: dict[str, Any],
    tokens: list[str],
    finish: str,
    prompt: int,
    chat: bool,
    usage_flags: tuple[bool, bool],
) -> web.StreamResponse:
    """vLLM's stream: ``usage_flags`` are (include_usage, continuous_usage_stats)."""
    include_usage, continuous = usage_flags
    headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    resp = web.StreamResponse(headers=headers)
    await resp.prepare(request)

    async def send(data: dict[str, Any] | str, completion: int | None = None) -> None:
        if continuous and isinstance(data, dict) and completion is not None:
            data["usage"] = fake.usage(prompt, completion)
            if chat:  # vLLM sets it (to None) explicitly there, so it is serialised
                data["usage"]["completion_tokens_details"] = None
        text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
        await resp.write(f"data: {text}\n\n".encode())

    if chat:
        role = chunk(base, chat, "", None)
        role["choices"][0]["delta"] = {"role": "assistant", "content": ""}
        await send(role, 0)
    pieces = tokens or [""]
    for i, token in enumerate(pieces):
        if fake.args.error_mid_stream is not None and i == fake.args.error_mid_stream:
            assert request.transport is not None
            request.transport.abort()
            return resp
        if fake.stall_at is not None and i == fake.stall_at:
            await asyncio.sleep(fake.stall_for)
        if i:
            await asyncio.sleep(fake.args.token_delay)
        last = chunk(base, chat, token, finish if i == len(pieces) - 1 else None)
        if i == len(pieces) - 1 and not include_usage and fake.fingerprint is not None:
            last["system_fingerprint"] = fake.fingerprint
        await send(last, i + 1 if tokens else 0)
    if include_usage:
        final = {**base, "choices": [], "usage": fake.usage(prompt, len(tokens))}
        if fake.fingerprint is not None:
            final["system_fingerprint"] = fake.fingerprint
        await send(final)
    await send("[DONE]")
    await resp.write_eof()
    return resp


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await generate(request, chat=True)


async def completions(request: web.Request) -> web.StreamResponse:
    return await generate(request, chat=False)


def vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()[:EMBED_DIM]
    raw = [b - 127.5 for b in digest]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


async def embeddings(request: web.Request) -> web.StreamResponse:
    fake: Fake = request.app["fake"]
    body = await read_body(request, fake)
    if isinstance(body, web.Response):
        return body
    inputs = body.get("input")
    if isinstance(inputs, str) or (
        isinstance(inputs, list) and inputs and isinstance(inputs[0], int)
    ):
        inputs = [inputs]
    if not isinstance(inputs, list):
        return error(400, "input: Field required", "BadRequestError", "input")
    data = [
        {"index": i, "object": "embedding", "embedding": vector(json.dumps(item))}
        for i, item in enumerate(inputs)
    ]
    n = count_words(inputs)
    usage = {**fake.usage(n, 0), "prompt_tokens_details": None}
    ident = f"embd-{uuid.uuid4().hex}"
    result = {"id": ident, "object": "list", "created": int(time.time())}
    return web.json_response({**result, "model": fake.args.model, "data": data, "usage": usage})


async def tokenize(request: web.Request) -> web.StreamResponse:
    fake: Fake = request.app["fake"]
    body = await read_body(request, fake)
    if isinstance(body, web.Response):
        return body
    words = " ".join(
        str(m.get("content", "")) for m in body.get("messages") or [] if isinstance(m, dict)
    ) or str(body.get("prompt", ""))
    ids = [int(hashlib.sha256(w.encode()).hexdigest()[:4], 16) for w in words.split()]
    result = {"count": len(ids), "max_model_len": fake.args.max_model_len, "tokens": ids}
    return web.json_response({**result, "token_strs": None})


async def models(request: web.Request) -> web.StreamResponse:
    fake: Fake = request.app["fake"]
    name = fake.args.model
    card = {"id": name, "object": "model", "created": int(time.time()), "owned_by": "vllm"}
    card.update(root=name, parent=None, max_model_len=fake.args.max_model_len, permission=[])
    return web.json_response({"object": "list", "data": [card]})


async def metrics(request: web.Request) -> web.StreamResponse:
    fake: Fake = request.app["fake"]
    text = (
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"
        "# TYPE vllm:num_requests_running gauge\n"
        f'vllm:num_requests_running{{model_name="{fake.args.model}",engine="0"}} '
        f"{float(fake.running)}\n"
    )
    return web.Response(text=text, content_type="text/plain")


async def ok(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok", "path": request.path})


def make_app(fake: Fake) -> web.Application:
    app = web.Application(middlewares=[gate])
    app["fake"] = fake
    app.router.add_get("/health", ok)
    app.router.add_get("/version", lambda _r: web.json_response({"version": "0.32.0"}))
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/pause", ok)
    app.router.add_post("/invocations", ok)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(args: argparse.Namespace) -> None:
    fake = Fake(args)
    stop = asyncio.Event()
    if not args.ignore_sigterm:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    runner = web.AppRunner(make_app(fake), handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, args.host, args.port).start()
    loras = " ".join(args.lora_modules)
    print(f"INFO fake engine on http://{args.host}:{args.port} model={args.model}", flush=True)
    if loras:
        print(f"INFO LoRA modules: {loras}", flush=True)
    marker = args.crash_marker
    if args.crash_after is not None and not (marker and os.path.exists(marker)):
        await asyncio.sleep(max(0.0, fake.ready_at - time.monotonic()) + args.crash_after)
        if marker:
            open(marker, "w").close()
        print("ERROR Engine core died unexpectedly (fake --crash-after)", flush=True)
        os._exit(1)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    if args.exit_on_start:
        print("INFO loading model weights", flush=True)
        print("torch.OutOfMemoryError: CPU out of memory. Tried to allocate 2.00 GiB", flush=True)
        sys.exit(1)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the child below
    child = None
    if args.spawn_child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
        print(f"INFO spawned child pid={child.pid}", flush=True)
    asyncio.run(serve(args))
    if child is not None:
        child.terminate()
        child.wait()


if __name__ == "__main__":
    main(sys.argv[1:])
