"""Ollama ``options`` -> OpenAI/vLLM sampling parameters (spec §2.2).

Ollama type-checks the keys it knows (``api.Options.FromMap``) and ignores the
rest, so a client that works against Ollama sends nothing we should reject,
and a wrong type gets Ollama's own message. Defaults that differ between the
two APIs (``num_predict: -1``, ``seed: -1``) are translated here and nowhere
else.
"""

from __future__ import annotations

from typing import Any, Literal

from vllama.errors import BadRequest

_Kind = Literal["integer", "float32", "boolean", "array"]

# Keys mapped onto the OpenAI/vLLM request: ollama key -> (type, openai key).
_MAPPED: dict[str, tuple[_Kind, str]] = {
    "num_predict": ("integer", "max_tokens"),
    "temperature": ("float32", "temperature"),
    "top_p": ("float32", "top_p"),
    "top_k": ("integer", "top_k"),
    "min_p": ("float32", "min_p"),
    "repeat_penalty": ("float32", "repetition_penalty"),
    "presence_penalty": ("float32", "presence_penalty"),
    "frequency_penalty": ("float32", "frequency_penalty"),
    "seed": ("integer", "seed"),
    "stop": ("array", "stop"),
}

# Keys Ollama knows and type-checks but that mean nothing per request on vLLM.
_CHECKED_ONLY: dict[str, _Kind] = {
    "num_keep": "integer",
    "typical_p": "float32",
    "repeat_last_n": "integer",
    "num_ctx": "integer",
    "num_batch": "integer",
    "num_gpu": "integer",
    "main_gpu": "integer",
    "num_thread": "integer",
    "use_mmap": "boolean",
}
# Everything else (legacy mirostat*, tfs_z, penalize_newline, numa, low_vram,
# use_mlock, vocab_only, ...) and unknown keys are ignored, as Ollama does.


def _wrong_type(key: str, kind: str) -> BadRequest:
    return BadRequest(f'option "{key}" must be of type {kind}', param=f"options.{key}")


def _coerce(key: str, kind: _Kind, value: object) -> Any:
    if kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong_type(key, kind)
        return int(value)  # Go: int64(float64) truncates toward zero
    if kind == "float32":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _wrong_type(key, kind)
        return float(value)
    if kind == "boolean":
        if not isinstance(value, bool):
            raise _wrong_type(key, kind)
        return value
    # array of strings; a lone string is accepted too (permissive in)
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise _wrong_type(key, kind)
    if not all(isinstance(item, str) for item in value):
        raise BadRequest(f'option "{key}" must be of an array of strings', param=f"options.{key}")
    return list(value)


def map_options(options: object) -> dict[str, Any]:
    """Validate Ollama ``options`` and return the OpenAI/vLLM parameters."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise BadRequest("options must be an object", param="options")
    out: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:  # Ollama skips nulls
            continue
        if key in _CHECKED_ONLY:
            _coerce(key, _CHECKED_ONLY[key], value)
            continue
        spec = _MAPPED.get(key)
        if spec is None:
            continue
        kind, target = spec
        coerced = _coerce(key, kind, value)
        # num_predict: -1 infinite, -2 fill context, 0 unlimited in the runner
        if key == "num_predict" and coerced <= 0:
            continue
        if key == "seed" and coerced == -1:  # -1 = random
            continue
        out[target] = coerced
    return out
