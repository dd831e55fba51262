"""Ollama-style model names: the table Ollama users expect to be equivalent."""

from __future__ import annotations

import pytest

from vllama.models.names import dir_name, display_name, is_valid, model_part, normalize


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("smollm2", "smollm2:latest"),
        ("smollm2:135m", "smollm2:135m"),
        ("  SmolLM2:135M \n", "smollm2:135m"),
        ("library/smollm2:135m", "smollm2:135m"),
        ("registry.ollama.ai/library/smollm2", "smollm2:latest"),
        ("REGISTRY.OLLAMA.AI/Library/SmolLM2:135m", "smollm2:135m"),
        ("https://registry.ollama.ai/library/smollm2", "smollm2:latest"),
        ("user/model", "user/model:latest"),
        ("example.com/user/model:v1", "example.com/user/model:v1"),
        ("localhost:5000/user/model", "localhost:5000/user/model:latest"),
        ("localhost:5000/user/model:q4", "localhost:5000/user/model:q4"),
        ("example.com/library/model", "example.com/library/model:latest"),
        ("qwen2.5:0.5b-instruct", "qwen2.5:0.5b-instruct"),
    ],
)
def test_normalize(name: str, expected: str) -> None:
    assert normalize(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("SmolLM2", "SmolLM2:latest"),
        ("Library/SmolLM2:135M", "SmolLM2:135M"),
        ("me/Model:Tag", "me/Model:Tag"),
    ],
)
def test_display_name_keeps_case(name: str, expected: str) -> None:
    assert display_name(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "smollm2",
        "smollm2:135m",
        "SmolLM2:135M",
        "_private",
        "qwen2.5:0.5b-instruct_q4",
        "user/model:tag",
        "example.com/user/model:tag",
        "localhost:5000/user/model:tag",
        "m" * 128,
        "model:" + "t" * 80,
    ],
)
def test_valid(name: str) -> None:
    assert is_valid(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "   ",
        ":tag",
        "model:",
        "-model",
        ".model",
        "mo del",
        "model..x",
        "model:t:x",
        "model+Q4_0",
        "model@sha256-abc",
        "a/b/c/d",
        "user.name/model",  # no dots in a namespace
        "host:5000/model",  # a two-part name is namespace/model: no port there
        "../etc/passwd",
        "model/",
        "/model",
        "modèle",
        "m" * 129,
        "model:" + "t" * 81,
    ],
)
def test_invalid(name: str) -> None:
    assert not is_valid(name)


def test_model_part() -> None:
    assert model_part("registry.ollama.ai/library/SmolLM2:135m") == "smollm2"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("SmolLM2:135M", "smollm2@135m"),
        ("smollm2", "smollm2@latest"),
        ("localhost:5000/user/m:t", "localhost@5000+user+m@t"),
    ],
)
def test_dir_name(name: str, expected: str) -> None:
    assert dir_name(name) == expected


def test_dir_name_rejects_what_could_escape_the_store() -> None:
    with pytest.raises(ValueError, match="invalid model name"):
        dir_name("../x")
