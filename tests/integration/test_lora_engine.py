"""A LoRA adapter served by the real vLLM: ``vllama create`` with ``ADAPTER``
on the bundled model, then the adapter and its base from one engine.

It restarts the shared engine (with ``--enable-lora``), so it runs last.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import ollama
import pytest
from safetensors.numpy import save_file

from tests.conftest import MODEL, Served
from tests.procs import VLLAMA

pytestmark = [pytest.mark.engine, pytest.mark.engine_restart]

ADAPTER = "smollm2-noisy"
LAYERS, HIDDEN, INTERMEDIATE, RANK = 30, 576, 1536, 8  # SmolLM2-135M's MLP
MESSAGES = [{"role": "user", "content": "Name three colours."}]
GREEDY = {"temperature": 0, "num_predict": 12}


def make_adapter(folder: Path) -> None:
    """A PEFT LoRA folder for every ``up_proj`` of SmolLM2-135M, with random
    weights large enough to change what the model says."""
    folder.mkdir()
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": RANK,
        "lora_alpha": 2 * RANK,
        "target_modules": ["up_proj"],
        "bias": "none",
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(7)
    tensors = {}
    for layer in range(LAYERS):
        prefix = f"base_model.model.model.layers.{layer}.mlp.up_proj"
        tensors[f"{prefix}.lora_A.weight"] = (0.1 * rng.standard_normal((RANK, HIDDEN))).astype(
            np.float32
        )
        tensors[f"{prefix}.lora_B.weight"] = (
            0.1 * rng.standard_normal((INTERMEDIATE, RANK))
        ).astype(np.float32)
    save_file(tensors, str(folder / "adapter_model.safetensors"))


def chat(client: ollama.Client, model: str) -> ollama.ChatResponse:
    """One greedy answer, waiting while the engine restarts to load ``model``
    (the gateway answers 503 with Retry-After after ``model_load_wait``)."""
    deadline = time.monotonic() + 600
    while True:
        try:
            return client.chat(model=model, messages=MESSAGES, options=GREEDY)
        except ollama.ResponseError as err:
            if err.status_code != 503 or time.monotonic() > deadline:
                raise
            time.sleep(2)


def test_an_adapter_and_its_base_from_one_real_engine(served: Served, tmp_path: Path) -> None:
    make_adapter(tmp_path / "lora")
    (tmp_path / "Modelfile").write_text(f"FROM {MODEL}\nADAPTER ./lora\n")
    created = subprocess.run(
        [str(VLLAMA), "create", ADAPTER, "-f", "Modelfile"],
        cwd=tmp_path,
        env={**os.environ, "OLLAMA_HOST": served.url.removeprefix("http://")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    client = served.ollama()
    shown = client.show(ADAPTER)
    assert shown.details is not None
    assert shown.details.format == "lora"

    base = chat(client, MODEL)
    restarts = served.proc.output.count("restarting the engine")
    adapted = chat(client, ADAPTER)  # restarts the engine with the adapter
    assert adapted.message.content
    assert adapted.eval_count == GREEDY["num_predict"]
    assert adapted.message.content != base.message.content
    again = chat(client, MODEL)  # the base, from the same engine: no second restart
    assert again.message.content
    assert served.proc.output.count("restarting the engine") == restarts + 1
    loaded = {m.model for m in client.ps().models}
    assert {f"{MODEL}", f"{ADAPTER}:latest"} <= loaded
