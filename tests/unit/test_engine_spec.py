"""The engine's command line and environment, as tables: what we launch is what we meant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vllama.engine.spec import (
    EngineSpec,
    default_engine_python,
    detect_kind,
    vllm_argv,
    vllm_spec,
)
from vllama.settings import Settings

PY = Path("/e/bin/python")
HEAD = [str(PY), "-m", "vllm.entrypoints.openai.api_server", "--model", "/m/dir"]
HEAD += ["--served-model-name", "smollm2:135m", "--host", "127.0.0.1", "--port", "8001"]


def argv(kind: str, **settings: Any) -> list[str]:
    return vllm_argv(
        Settings(**settings),
        kind=kind,  # type: ignore[arg-type]
        python=PY,
        model="/m/dir",
        served_name="smollm2:135m",
        port=8001,
    )


@pytest.mark.parametrize(
    ("kind", "settings", "tail"),
    [
        ("cpu", {}, "--enforce-eager --dtype bfloat16"),
        (
            "cpu",
            {"max_num_seqs": 16, "max_model_len": 4096, "engine_args": ["--seed", "7"]},
            "--enforce-eager --dtype bfloat16 --max-num-seqs 16 --max-model-len 4096 --seed 7",
        ),
        (
            "gpu",
            {},
            "--gpu-memory-utilization 0.9 --enable-prefix-caching --tensor-parallel-size 1",
        ),
        (
            "gpu",
            {
                "gpu_memory_utilization": 0.5,
                "enable_prefix_caching": False,
                "tensor_parallel_size": 2,
                "max_num_seqs": 64,
                "engine_args": ["--enable-lora", "--max-loras", "2"],
            },
            "--gpu-memory-utilization 0.5 --no-enable-prefix-caching --tensor-parallel-size 2"
            " --max-num-seqs 64 --enable-lora --max-loras 2",
        ),
    ],
)
def test_argv_table(kind: str, settings: dict[str, Any], tail: str) -> None:
    assert argv(kind, **settings) == [*HEAD, *tail.split()]


def test_api_key_only_on_the_command_line_when_asked() -> None:
    settings = Settings()
    common: dict[str, Any] = {"python": PY, "model": "m", "served_name": "m", "port": 1}
    assert "--api-key" not in vllm_argv(settings, kind="cpu", **common)
    with_key = vllm_argv(settings, kind="cpu", api_key="s3cret", **common)
    assert with_key[with_key.index("--api-key") + 1] == "s3cret"


def test_spec_cpu(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, cpu_kvcache_space_gib=3, engine_port=9123)
    spec = vllm_spec(settings, kind="cpu", python=PY, model="/m", served_name="m")
    assert spec.port == 9123
    assert spec.base_url == "http://127.0.0.1:9123"
    assert spec.api_key is not None
    assert len(spec.api_key) >= 32
    assert spec.api_key not in " ".join(spec.argv)  # not visible in `ps`
    assert spec.env["VLLM_API_KEY"] == spec.api_key
    assert spec.env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert spec.log_path == tmp_path / "logs" / "engine.log"
    assert spec.health_path == "/health"
    assert spec.start_timeout == settings.engine_start_timeout


def test_spec_gpu_has_no_cpu_env_and_a_free_port(tmp_path: Path) -> None:
    spec = vllm_spec(Settings(home=tmp_path), kind="gpu", python=PY, model="m", served_name="m")
    assert "VLLM_CPU_KVCACHE_SPACE" not in spec.env
    assert 0 < spec.port < 65536
    other = vllm_spec(Settings(home=tmp_path), kind="gpu", python=PY, model="m", served_name="m")
    assert other.api_key != spec.api_key


def test_base_url_brackets_ipv6(tmp_path: Path) -> None:
    spec = EngineSpec(argv=[], env={}, host="::1", port=5, api_key=None, log_path=tmp_path)
    assert spec.base_url == "http://[::1]:5"


@pytest.mark.parametrize(
    ("engine", "environ", "gpu_listed", "expected"),
    [
        ("cpu", {}, True, "cpu"),
        ("gpu", {}, False, "gpu"),
        ("auto", {}, False, "cpu"),
        ("auto", {}, True, "gpu"),
        ("auto", {"CUDA_VISIBLE_DEVICES": ""}, True, "cpu"),
        ("auto", {"CUDA_VISIBLE_DEVICES": "-1"}, True, "cpu"),
        ("auto", {"CUDA_VISIBLE_DEVICES": "0,1"}, False, "gpu"),
    ],
)
def test_detect_kind(engine: str, environ: dict[str, str], gpu_listed: bool, expected: str) -> None:
    settings = Settings(engine=engine)  # type: ignore[arg-type]
    assert detect_kind(settings, environ=environ, gpu_listed=lambda: gpu_listed) == expected


def test_default_engine_python(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert default_engine_python(settings, "cpu") == tmp_path / "engines/vllm-cpu/bin/python"
    assert default_engine_python(settings, "gpu") == tmp_path / "engines/vllm-gpu/bin/python"
    explicit = Settings(home=tmp_path, engine_python=Path("/opt/py"))
    assert default_engine_python(explicit, "gpu") == Path("/opt/py")
