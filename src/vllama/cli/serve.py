"""``vllama serve``: the engine and the gateway in one command.

uvicorn with uvloop and httptools serves the app; its signal handling turns
Ctrl-C/SIGTERM into a graceful shutdown whose lifespan stops the engine's
whole process group. A watcher shows start-up progress and ends the server
when the engine fails to start, quoting the engine's own last words.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import uvicorn
import uvloop
from rich.console import Console

from vllama.cli.logs import setup_logging
from vllama.cli.status import ExitStatus
from vllama.engine.supervisor import EngineState
from vllama.errors import VllamaError
from vllama.server.app import create_app
from vllama.server.boot import build_gateway
from vllama.server.gateway import Gateway
from vllama.server.wire import HttpProtocol
from vllama.settings import Settings, SettingsError, load_settings

log = logging.getLogger("vllama.serve")


class _Server(uvicorn.Server):
    """uvicorn, minus re-raising the signal after a graceful stop.

    uvicorn re-raises SIGTERM once it has shut down, which kills the process
    with status -15; a service stopped on request should exit 0. The handlers
    only flag the server; the loop does the work.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


async def _watch_start(gateway: Gateway, server: uvicorn.Server, console: Console) -> int:
    """Show progress until ready; stop the server if the engine cannot start."""
    started = time.monotonic()
    engine = gateway.engine
    url = f"http://{gateway.settings.host}:{gateway.settings.port}"
    with console.status("") as status:
        while not engine.is_ready:
            if engine.state == EngineState.FAILED:
                error = getattr(engine, "last_error", None) or "engine failed"
                log.error("engine failed to start:\n%s", error)
                server.should_exit = True
                return ExitStatus.ENGINE_FAILED
            status.update(f"engine {engine.state} ({time.monotonic() - started:.0f} s)")
            await asyncio.sleep(0.25)
    log.info("ready in %.1f s: %s (engine %s)", time.monotonic() - started, url, engine.base_url)
    return ExitStatus.OK


async def _serve(settings: Settings, console: Console) -> int:
    try:
        gateway = await build_gateway(settings, progress=lambda line: log.info("%s", line))
    except VllamaError as err:
        log.error("%s", err.message)
        return ExitStatus.ENGINE_FAILED
    app = create_app(gateway)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=HttpProtocol,
        lifespan="on",
        access_log=False,
        proxy_headers=False,
        server_header=False,
        log_config=None,
        timeout_graceful_shutdown=int(settings.engine_stop_grace) + 5,
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve())
    # uvicorn exposes start-up only as a flag, so poll it briefly.
    while not server.started and not serving.done():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    watcher = asyncio.create_task(_watch_start(gateway, server, console))
    await serving
    code = await watcher if watcher.done() else ExitStatus.OK
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    if not server.started:
        return ExitStatus.ERROR
    return int(code)


def _overrides(flags: dict[str, Any]) -> dict[str, Any]:
    values = {k: v for k, v in flags.items() if v is not None and k != "config"}
    if not values.get("engine_args"):
        values.pop("engine_args", None)
    else:
        values["engine_args"] = list(values["engine_args"])
    return values


@click.command()
@click.option("--host", help="Bind address (default 127.0.0.1, or OLLAMA_HOST).")
@click.option("--port", type=int, help="Bind port (default 11434).")
@click.option("--model", help="Model the managed engine serves (default smollm2:135m).")
@click.option("--engine", type=click.Choice(["auto", "cpu", "gpu"]), help="Engine build.")
@click.option("--engine-url", help="Attach to a running OpenAI-compatible engine instead.")
@click.option("--engine-api-key", help="Key of the attached engine.")
@click.option("--engine-python", type=click.Path(path_type=Path), help="Engine's Python.")
@click.option("--max-num-seqs", type=int, help="vLLM --max-num-seqs.")
@click.option("--max-model-len", type=int, help="vLLM --max-model-len.")
@click.option("--gpu-memory-utilization", type=float, help="vLLM --gpu-memory-utilization.")
@click.option("--tensor-parallel-size", type=int, help="vLLM --tensor-parallel-size.")
@click.option("--enable-prefix-caching/--no-enable-prefix-caching", default=None)
@click.option("--engine-arg", "engine_args", multiple=True, help="Extra engine flag, repeatable.")
@click.option("--home", type=click.Path(path_type=Path), help="Data directory.")
@click.option("--log-format", type=click.Choice(["rich", "json"]))
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--config", type=click.Path(path_type=Path), help="TOML config file.")
def serve(**flags: Any) -> None:
    """Start the engine and the gateway (Ollama and OpenAI APIs on one port)."""
    console = Console(stderr=True)
    try:
        settings = load_settings(_overrides(flags), config_file=flags.get("config"))
    except SettingsError as err:
        console.print(f"[red]error:[/red] {err}")
        sys.exit(ExitStatus.BAD_CONFIG)
    writer = setup_logging(settings.log_format, settings.log_level, console)
    try:
        code = uvloop.run(_serve(settings, console))
    finally:
        writer.close()
    sys.exit(code)
