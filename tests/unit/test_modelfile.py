"""Modelfiles: Ollama's syntax in, typed defaults out, and how they meet requests."""

from __future__ import annotations

import pytest

from vllama.errors import BadRequest
from vllama.models.modelfile import (
    check_parameters,
    modelfile_text,
    parameters_text,
    parse_modelfile,
    with_system,
)

TEXT = '''# a pirate
FROM ./model.gguf
system """You are a pirate.
Always."""
PARAMETER temperature 0.2
PARAMETER num_predict 64
PARAMETER stop "<|im_end|>"
PARAMETER stop "User:"
ADAPTER ./lora
MESSAGE user hello
'''


def test_parse() -> None:
    parsed = parse_modelfile(TEXT)
    assert parsed.from_ == "./model.gguf"
    assert parsed.system == "You are a pirate.\nAlways."
    assert parsed.parameters == {
        "temperature": 0.2,
        "num_predict": 64,
        "stop": ["<|im_end|>", "User:"],
    }
    assert parsed.adapters == ["./lora"]
    assert parsed.messages == [{"role": "user", "content": "hello"}]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SYSTEM hi", "no FROM"),
        ("FROM x\nBOGUS y", "unknown Modelfile instruction"),
        ("FROM x\nPARAMETER num_predict lots", "invalid value for PARAMETER num_predict"),
        ("FROM x\nPARAMETER temperature", "needs a name and a value"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_modelfile(text)


def test_api_parameters_are_typed() -> None:
    assert check_parameters({"num_predict": "8", "stop": "x", "top_p": 1}) == {
        "num_predict": 8,
        "stop": ["x"],
        "top_p": 1,
    }
    with pytest.raises(BadRequest):
        check_parameters(["x"])


def test_show_texts() -> None:
    params = {"num_predict": 3, "stop": ["a", "b"], "temperature": 0.5}
    assert parameters_text(params) == 'num_predict 3\nstop "a"\nstop "b"\ntemperature 0.5'
    text = modelfile_text("base:latest", "Be brief.", params)
    assert text.splitlines()[1:3] == ["FROM base:latest", 'SYSTEM """Be brief."""']
    assert "PARAMETER num_predict 3" in text


@pytest.mark.parametrize(
    ("kind", "body", "expected"),
    [
        ("chat", {"messages": [{"role": "user", "content": "x"}]}, "added"),
        ("chat", {"messages": [{"role": "system", "content": "own"}]}, "kept"),
        ("generate", {"prompt": "x"}, "added"),
        ("generate", {"prompt": "x", "system": "own"}, "kept"),
        ("generate", {"prompt": "x", "raw": True}, "kept"),
    ],
)
def test_with_system(kind: str, body: dict[str, object], expected: str) -> None:
    out = with_system(kind, body, "default")
    if expected == "kept":
        assert out == body
    elif kind == "chat":
        assert out["messages"][0] == {"role": "system", "content": "default"}  # type: ignore[index]
    else:
        assert out["system"] == "default"
