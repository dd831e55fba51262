"""Modelfiles: parsing the text, and the defaults a created model adds to requests.

Why: ``vllama create NAME -f Modelfile`` is how Ollama users make a model with
its own system prompt and sampling defaults. We keep Ollama's syntax (``FROM``,
``SYSTEM``, ``PARAMETER``, ``TEMPLATE``, ``ADAPTER``, ``LICENSE``, ``MESSAGE``;
case-insensitive instructions, ``\"\"\"`` for multi-line values, ``#`` comments) and
its ``/api/create`` request (``from``, ``files``, ``system``, ``parameters``), and
apply the defaults at request time: a request's own ``options`` and ``system``
win over them. Pure functions, no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from vllama.errors import BadRequest

_INSTRUCTIONS = ("from", "system", "parameter", "template", "adapter", "license", "message")
_INTS = {"num_ctx", "num_predict", "top_k", "seed", "num_keep", "repeat_last_n", "num_batch"}
_FLOATS = {"temperature", "top_p", "min_p", "repeat_penalty", "presence_penalty"}
_FLOATS |= {"frequency_penalty", "typical_p"}


@dataclass
class Modelfile:
    from_: str = ""
    system: str | None = None
    template: str | None = None
    license: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    adapters: list[str] = field(default_factory=list)
    messages: list[dict[str, str]] = field(default_factory=list)


def _unquote(value: str) -> str:
    value = value.strip()
    for quote in ('"""', '"'):
        if len(value) >= 2 * len(quote) and value.startswith(quote) and value.endswith(quote):
            return value[len(quote) : -len(quote)]
    return value


def _logical_lines(text: str) -> list[tuple[str, str]]:
    """(instruction, argument) pairs, joining ``\"\"\"`` blocks that span lines."""
    out: list[tuple[str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if rest.startswith('"""') and (rest.count('"""') == 1 or rest == '"""'):
            block = [rest]
            while i < len(lines) and '"""' not in lines[i]:
                block.append(lines[i])
                i += 1
            if i < len(lines):
                block.append(lines[i])
                i += 1
            rest = "\n".join(block)
        out.append((word.lower(), rest))
    return out


def parameter_value(key: str, raw: object) -> Any:
    """A PARAMETER value with Ollama's type for known keys (text stays text)."""
    if not isinstance(raw, str):
        return raw
    text = _unquote(raw)
    try:
        if key in _INTS:
            return int(text)
        if key in _FLOATS:
            return float(text)
    except ValueError as exc:
        raise BadRequest(f"invalid value for PARAMETER {key}: {raw!r}") from exc
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def parse_modelfile(text: str) -> Modelfile:
    """Parse Modelfile text; BadRequest names the first line it cannot read."""
    result = Modelfile()
    for word, rest in _logical_lines(text):
        if word not in _INSTRUCTIONS:
            raise BadRequest(f"unknown Modelfile instruction {word.upper()!r}")
        if word == "from":
            result.from_ = _unquote(rest)
        elif word == "system":
            result.system = _unquote(rest)
        elif word == "template":
            result.template = _unquote(rest)
        elif word == "license":
            result.license = _unquote(rest)
        elif word == "adapter":
            result.adapters.append(_unquote(rest))
        elif word == "message":
            role, _, content = rest.partition(" ")
            result.messages.append({"role": role.lower(), "content": _unquote(content)})
        else:
            key, _, value = rest.partition(" ")
            if not key or not value.strip():
                raise BadRequest(f"PARAMETER needs a name and a value: {rest!r}")
            key = key.lower()
            parsed = parameter_value(key, value)
            if key == "stop":
                result.parameters.setdefault("stop", []).append(str(parsed))
            else:
                result.parameters[key] = parsed
    if not result.from_:
        raise BadRequest("no FROM line in the Modelfile")
    return result


def check_parameters(raw: object) -> dict[str, Any]:
    """``/api/create``'s ``parameters`` object, values typed as Ollama types them."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadRequest("parameters must be an object", param="parameters")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "stop":
            out[key] = [value] if isinstance(value, str) else list(value)
        else:
            out[str(key)] = parameter_value(str(key), value)
    return out


def parameters_text(parameters: dict[str, Any]) -> str:
    """``/api/show``'s ``parameters``: one ``key value`` line per value, stops quoted."""
    lines = []
    for key, value in sorted(parameters.items()):
        for item in value if isinstance(value, list) else [value]:
            shown = json.dumps(item) if isinstance(item, str) else str(item).lower()
            lines.append(f"{key} {shown}")
    return "\n".join(lines)


def modelfile_text(from_: str, system: str, parameters: dict[str, Any]) -> str:
    """The Modelfile ``/api/show`` reports for a model."""
    lines = ["# Modelfile generated by vLLama", f"FROM {from_}"]
    if system:
        lines.append(f'SYSTEM """{system}"""')
    for line in parameters_text(parameters).splitlines():
        lines.append(f"PARAMETER {line}")
    return "\n".join(lines) + "\n"


def with_system(kind: str, body: dict[str, Any], system: str) -> dict[str, Any]:
    """The request with the model's default system prompt, unless it brings its own."""
    if not system:
        return body
    if kind == "generate":
        if body.get("system") or body.get("raw"):
            return body
        return {**body, "system": system}
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    if any(isinstance(m, dict) and m.get("role") == "system" for m in messages):
        return body
    return {**body, "messages": [{"role": "system", "content": system}, *messages]}
