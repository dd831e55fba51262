"""One typed settings object, built once at start and passed down.

Sources, lowest to highest precedence: defaults, a TOML config file
(``--config`` or ``VLLAMA_CONFIG``), environment (``VLLAMA_*``, plus
``OLLAMA_HOST`` for the bind address as Ollama users expect), then command-line
flags. Bad values fail at start with one clear message (``SettingsError``), not
deep inside a request.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from vllama.errors import BadRequest
from vllama.protocol.ollama import parse_go_duration
from vllama.routing.config import (
    BackendConfig,
    ModelRouting,
    check_backends,
    engine_base_url,
)

DEFAULT_PORT = 11434
DEFAULT_MODEL = "smollm2:135m"

EngineKind = Literal["auto", "cpu", "gpu"]


class SettingsError(ValueError):
    """A setting is missing or wrong; the message names it."""


def parse_ollama_host(value: str) -> tuple[str, int]:
    """Parse ``OLLAMA_HOST`` the way Ollama does: ``host``, ``host:port``,
    ``:port``, ``scheme://host:port`` and ``[v6]:port`` are all accepted."""
    raw = value.strip()
    scheme = "http"
    if "://" in raw:
        scheme, raw = raw.split("://", 1)
    raw = raw.split("/", 1)[0]
    default_port = {"http": DEFAULT_PORT, "https": 443}.get(scheme, DEFAULT_PORT)
    host, port = raw, default_port
    if raw.startswith("["):
        end = raw.find("]")
        host = raw[1:end]
        rest = raw[end + 1 :]
        if rest.startswith(":") and rest[1:]:
            port = int(rest[1:])
    elif raw.count(":") == 1:
        host, port_text = raw.split(":")
        if port_text:
            port = int(port_text)
    if not host:
        host = "127.0.0.1"
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return host, port


class Settings(BaseModel):
    """Everything vLLama can be told. Field docs are the reference (docs/CONFIG.md)."""

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)

    # -- gateway -----------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the gateway binds.")
    port: int = Field(DEFAULT_PORT, ge=1, le=65535, description="Port the gateway binds.")
    home: Path = Field(
        Path.home() / ".vllama",
        description="Data directory: model store, engine environments, logs, database.",
    )
    log_format: Literal["rich", "json"] = Field("rich", description="Console log format.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # -- engine ------------------------------------------------------------
    engine_url: str | None = Field(
        None, description="Attach mode: an OpenAI-compatible engine already running."
    )
    engine_api_key: str | None = Field(
        None, description="Key the attached engine expects (attach mode only)."
    )
    engine: EngineKind = Field("auto", description="auto picks gpu when CUDA is visible.")
    engine_python: Path | None = Field(
        None,
        description="Python of the engine environment; default: the managed one under home.",
    )
    model: str = Field(DEFAULT_MODEL, description="Model the managed engine serves.")
    engine_port: int | None = Field(None, description="Engine port; default: a free one.")
    max_num_seqs: int | None = Field(None, ge=1, description="vLLM --max-num-seqs.")
    max_model_len: int | None = Field(None, ge=16, description="vLLM --max-model-len.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    enable_prefix_caching: bool = True
    tensor_parallel_size: int = Field(1, ge=1)
    cpu_kvcache_space_gib: int = Field(2, ge=1, description="VLLM_CPU_KVCACHE_SPACE on CPU.")
    engine_args: list[str] = Field(
        default_factory=list, description="Extra flags passed to the engine as they are."
    )
    torch_index_url: str | None = Field(
        None,
        description=(
            "Extra pip index for `vllama engine install` when the default index lacks"
            " torch 2.13.0+cpu (e.g. https://download.pytorch.org/whl/cpu)."
        ),
    )
    engine_start_timeout: float = Field(900.0, gt=0, description="Seconds to reach ready.")
    engine_stop_grace: float = Field(10.0, ge=0, description="SIGTERM to SIGKILL, seconds.")
    restart_backoff: float = Field(1.0, gt=0, description="First restart delay, doubling.")
    restart_backoff_max: float = Field(30.0, gt=0)
    model_switch: Literal["restart", "add", "off"] = Field(
        "restart",
        description="A request for a model on disk that no engine serves: restart the managed"
        " engine with it, start one more engine for it (add), or refuse it (off).",
    )
    max_loaded_models: int = Field(
        1,
        ge=1,
        description="Engines loaded at once under model_switch = add; the least recently used"
        " idle one is unloaded to make room.",
    )
    model_load_wait: float = Field(
        60.0, ge=0, description="Seconds a request waits for its model to load, then 503."
    )

    # -- upstream HTTP -------------------------------------------------------
    upstream_connect_timeout: float = Field(5.0, gt=0)
    upstream_first_byte_timeout: float = Field(300.0, gt=0)
    upstream_idle_timeout: float = Field(120.0, gt=0, description="Max gap between chunks.")
    upstream_pool_size: int = Field(1024, ge=1)

    # -- Ollama behaviour ----------------------------------------------------
    keep_alive: str = Field(
        "-1",
        description="Default keep_alive (OLLAMA_KEEP_ALIVE): idle time before a managed engine"
        " is stopped; negative = never (vLLM takes 30-60 s to start).",
    )
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)

    # -- auth, limits, usage (docs/AUTH.md) -----------------------------------
    auth: Literal["auto", "on", "off"] = Field(
        "auto", description="API keys required: auto = when binding beyond loopback."
    )
    admin_key: SecretStr | None = Field(
        None, description="Secret for /admin/* (16+ characters); no admin API without it."
    )
    database_url: SecretStr | None = Field(
        None,
        description=(
            "Keys and usage: default SQLite `vllama.db` in home; `sqlite:///path`;"
            " `postgresql://user:pw@host/db` to share them between replicas."
        ),
    )
    auth_refresh_interval: float = Field(
        1.0,
        gt=0,
        description="Seconds between key-table reloads (CLI/other replicas' changes apply within).",
    )
    usage_flush_interval: float = Field(
        2.0, gt=0, description="Seconds between batched usage writes."
    )
    metrics_open: bool = Field(
        False, description="Serve /metrics without a key when auth is required."
    )
    trusted_front_header: str | None = Field(
        None, description="Header in which a trusted front passes its user (e.g. x-vllama-user)."
    )
    trusted_front_secret: SecretStr | None = Field(
        None, description="Secret a trusted front sends in X-Vllama-Front-Secret."
    )
    trusted_front_addresses: list[str] = Field(
        default_factory=list,
        description="Addresses/networks whose identity header is trusted without the secret.",
    )
    front_rpm: int | None = Field(None, ge=1, description="Requests/minute per front user.")
    front_tpm: int | None = Field(None, ge=1, description="Tokens/minute per front user.")
    front_max_concurrency: int | None = Field(
        None, ge=1, description="Concurrent requests per front user."
    )
    max_messages: int | None = Field(None, ge=1, description="Most messages in one chat request.")
    max_tokens_limit: int | None = Field(
        None, ge=1, description="Highest max_tokens / num_predict a request may ask for."
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="CORS origins allowed besides local ones (OLLAMA_ORIGINS); globs, `*` = any.",
    )

    # -- routing over several backends (docs/SCALING.md) -----------------------
    backends: list[BackendConfig] = Field(
        default_factory=list,
        description="More engines besides the managed/attached one (`[[backends]]` tables).",
    )
    model_routing: dict[str, ModelRouting] = Field(
        default_factory=dict,
        description='Per-model affinity and queue (`[model_routing."NAME"]`, `"*"` = default).',
    )
    health_interval: float = Field(
        5.0, gt=0, description="Seconds between active health checks of the backends."
    )
    breaker_failures: int = Field(
        5, ge=1, description="Consecutive failures that open a backend's circuit breaker."
    )
    breaker_cooldown: float = Field(
        10.0, gt=0, description="Seconds an open breaker waits before a probe request."
    )

    @field_validator("backends", "model_routing", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value  # from the environment

    @field_validator("backends")
    @classmethod
    def _backends(cls, value: list[BackendConfig]) -> list[BackendConfig]:
        check_backends(value)
        return value

    @field_validator("engine_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return engine_base_url(value)

    @field_validator("admin_key", "trusted_front_secret")
    @classmethod
    def _strong(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("trusted_front_addresses")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)  # ValueError names it
        return value

    @field_validator("keep_alive")
    @classmethod
    def _keep_alive(cls, value: str) -> str:
        """A Go duration, or plain seconds as OLLAMA_KEEP_ALIVE allows ("-1": forever);
        checked here so a bad one stops the start, not every request."""
        text = value.strip()
        if text.lstrip("-").isdigit():
            text += "s"
        try:
            parse_go_duration(text)
        except BadRequest as exc:
            raise ValueError(exc.message) from exc
        return text

    @field_validator("trusted_front_header")
    @classmethod
    def _header(cls, value: str | None) -> str | None:
        return value.strip().lower() or None if value is not None else None

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.restart_backoff_max < self.restart_backoff:
            raise ValueError("restart_backoff_max must be >= restart_backoff")
        if self.trusted_front_header and not (
            self.trusted_front_secret or self.trusted_front_addresses
        ):
            raise ValueError(
                "trusted_front_header needs trusted_front_secret or trusted_front_addresses"
            )
        return self

    # -- derived paths -------------------------------------------------------
    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def engines_dir(self) -> Path:
        return self.home / "engines"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def attached(self) -> bool:
        return self.engine_url is not None


def _config_file(explicit: Path | None, env: dict[str, str]) -> dict[str, Any]:
    path = explicit or (Path(env["VLLAMA_CONFIG"]) if env.get("VLLAMA_CONFIG") else None)
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise SettingsError(f"config file {path} not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path}: {exc}") from exc
    return {key.replace("-", "_"): value for key, value in data.items()}


def _from_environ(env: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        raw = env.get(f"VLLAMA_{name.upper()}")
        if raw is None:
            continue
        values[name] = shlex.split(raw) if field.annotation == list[str] else raw
    return values


def load_settings(
    overrides: dict[str, Any] | None = None,
    *,
    config_file: Path | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Build the settings from every source; raise SettingsError naming the bad value."""
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = _config_file(config_file, env)
    if env.get("OLLAMA_HOST"):
        try:
            values["host"], values["port"] = parse_ollama_host(env["OLLAMA_HOST"])
        except ValueError as exc:
            raise SettingsError(f"OLLAMA_HOST={env['OLLAMA_HOST']!r}: {exc}") from exc
    if env.get("OLLAMA_KEEP_ALIVE"):
        values["keep_alive"] = env["OLLAMA_KEEP_ALIVE"]
    if env.get("OLLAMA_ORIGINS"):
        values["cors_origins"] = [o.strip() for o in env["OLLAMA_ORIGINS"].split(",") if o.strip()]
    values.update(_from_environ(env))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise SettingsError(problems) from exc
