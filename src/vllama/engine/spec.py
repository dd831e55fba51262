"""What to run for the managed engine, decided once from the settings.

``vllm_argv`` is a pure function so the exact command line can be table-tested
without starting anything; ``vllm_spec`` adds the parts that touch the machine
(a free port, a random internal key, the environment) and returns an
``EngineSpec``, the only thing the supervisor needs to know.

The internal key is passed in the environment (``VLLM_API_KEY``, which vLLM reads
when ``--api-key`` is absent) rather than on the command line, because any local
user can read another process's argv in ``/proc`` but not its environment.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vllama.settings import Settings

Kind = Literal["cpu", "gpu"]

ENGINE_HOST = "127.0.0.1"
VLLM_MODULE = "vllm.entrypoints.openai.api_server"


@dataclass(frozen=True, kw_only=True)
class EngineSpec:
    """How to start, probe and stop one engine process.

    ``env`` holds only the variables to add to the gateway's own environment.
    """

    argv: list[str]
    env: dict[str, str]
    host: str
    port: int
    api_key: str | None
    log_path: Path
    health_path: str = "/health"
    start_timeout: float = 900.0
    stop_grace: float = 10.0
    restart_backoff: float = 1.0
    restart_backoff_max: float = 30.0
    #: Seconds between health probes while starting (connection refused is instant).
    health_interval: float = 0.5
    #: Per-probe timeout; generous because a busy CPU engine answers slowly.
    health_timeout: float = 5.0
    #: Seconds between health probes once ready.
    watch_interval: float = 5.0
    #: Consecutive failed probes after which a ready engine counts as hung.
    health_failures: int = 3
    #: Ready for this long, the next crash restarts after the first backoff again.
    stable_after: float = 60.0

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def _nvidia_smi_lists_gpu() -> bool:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        out = subprocess.run(
            [exe, "-L"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(line.startswith("GPU ") for line in out.splitlines())


def detect_kind(
    settings: Settings,
    *,
    environ: Mapping[str, str] | None = None,
    gpu_listed: Callable[[], bool] = _nvidia_smi_lists_gpu,
) -> Kind:
    """Pick cpu or gpu. An explicit setting wins; ``auto`` means gpu only when
    ``CUDA_VISIBLE_DEVICES`` does not hide every device and either the NVIDIA
    driver lists a GPU or the user named devices in ``CUDA_VISIBLE_DEVICES``."""
    if settings.engine != "auto":
        return settings.engine
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return "cpu"
    if gpu_listed():
        return "gpu"
    return "gpu" if visible else "cpu"


def default_engine_python(settings: Settings, kind: Kind) -> Path:
    """The engine's interpreter: the configured one, else the managed environment."""
    if settings.engine_python is not None:
        return settings.engine_python
    return settings.engines_dir / f"vllm-{kind}" / "bin" / "python"


def vllm_argv(
    settings: Settings,
    *,
    kind: Kind,
    python: Path,
    model: str,
    served_name: str,
    port: int,
    api_key: str | None = None,
) -> list[str]:
    """The engine's command line. ``api_key`` is only for callers that want it on
    the command line; ``vllm_spec`` passes it in the environment instead."""
    argv = [str(python), "-m", VLLM_MODULE, "--model", model]
    argv += ["--served-model-name", served_name, "--host", ENGINE_HOST, "--port", str(port)]
    if api_key is not None:
        argv += ["--api-key", api_key]
    if kind == "cpu":
        argv += ["--enforce-eager", "--dtype", "bfloat16"]
    else:
        argv += ["--gpu-memory-utilization", str(settings.gpu_memory_utilization)]
        argv.append(
            "--enable-prefix-caching"
            if settings.enable_prefix_caching
            else "--no-enable-prefix-caching"
        )
        argv += ["--tensor-parallel-size", str(settings.tensor_parallel_size)]
    if settings.max_num_seqs is not None:
        argv += ["--max-num-seqs", str(settings.max_num_seqs)]
    if settings.max_model_len is not None:
        argv += ["--max-model-len", str(settings.max_model_len)]
    return [*argv, *settings.engine_args]


def vllm_env(settings: Settings, *, kind: Kind, api_key: str) -> dict[str, str]:
    """Variables added to the engine's environment."""
    env = {"VLLM_API_KEY": api_key, "PYTHONUNBUFFERED": "1"}
    if kind == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(settings.cpu_kvcache_space_gib)
    return env


def free_port(host: str = ENGINE_HOST) -> int:
    """A port the OS says is free now (another process may take it before the
    engine binds; the log diagnosis then says so)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def vllm_spec(
    settings: Settings,
    *,
    kind: Kind,
    python: Path,
    model: str,
    served_name: str,
    extra: bool = False,
    log_name: str = "engine.log",
) -> EngineSpec:
    """Everything the supervisor needs to run vLLM for ``model`` as ``served_name``.

    ``extra``: an engine besides the first (``model_switch = add``), which never
    takes the configured ``engine_port`` (the first engine has it)."""
    port = (None if extra else settings.engine_port) or free_port()
    api_key = secrets.token_urlsafe(32)
    return EngineSpec(
        argv=vllm_argv(
            settings, kind=kind, python=python, model=model, served_name=served_name, port=port
        ),
        env=vllm_env(settings, kind=kind, api_key=api_key),
        host=ENGINE_HOST,
        port=port,
        api_key=api_key,
        log_path=settings.logs_dir / log_name,
        start_timeout=settings.engine_start_timeout,
        stop_grace=settings.engine_stop_grace,
        restart_backoff=settings.restart_backoff,
        restart_backoff_max=settings.restart_backoff_max,
    )
