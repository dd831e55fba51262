"""What a Hugging Face model folder is, read from its own files: no torch, no network.

Why: Ollama's ``/api/tags`` and ``/api/show`` report a parameter size, a
quantization level, GGUF-style ``model_info`` keys, capabilities and the chat
template. We derive them from ``config.json``, the tokenizer files and the
safetensors headers (parsed by hand: 8 bytes of length, then JSON), so listing
models costs a few small reads, never loading weights.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any, NamedTuple

from vllama.models import names

_MAX_HEADER = 64 * 1024 * 1024  # a larger safetensors header means a corrupt file
_DTYPES = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}
_CAUSAL = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
_THINKING = re.compile(r"think|reasoning", re.IGNORECASE)
_TOOLS = re.compile(r"\btools?\b", re.IGNORECASE)


class FolderInfo(NamedTuple):
    details: dict[str, Any]  #: Ollama's ``details``
    model_info: dict[str, Any]  #: Ollama's ``model_info``
    capabilities: list[str]  #: "completion", "tools", "thinking", "vision", "embedding"
    template: str  #: the chat template, "" when there is none


def human_count(count: int) -> str:
    """Parameter count as Ollama's ``format.Human`` shows it: 134515008 -> "135M"."""
    for unit, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if count > unit:
            return f"{int(count / unit + 0.5)}{suffix}"  # Go's math.Round: half up
    return str(count)


def safetensors_header(file: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file: 8 bytes little-endian length, then JSON."""
    with file.open("rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise ValueError(f"{file.name}: truncated safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > _MAX_HEADER:
            raise ValueError(f"{file.name}: safetensors header of {length} bytes")
        header: dict[str, Any] = json.loads(handle.read(length))
    return header


def tensor_stats(folder: Path) -> tuple[int, dict[str, int]]:
    """(parameter count, parameters per dtype) from the safetensors headers, no torch."""
    total = 0
    by_dtype: dict[str, int] = {}
    for file in sorted(folder.glob("*.safetensors")):
        for key, tensor in safetensors_header(file).items():
            if key == "__metadata__":
                continue
            count = 1
            for dim in tensor["shape"]:
                count *= int(dim)
            total += count
            by_dtype[tensor["dtype"]] = by_dtype.get(tensor["dtype"], 0) + count
    return total, by_dtype


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def chat_template(folder: Path) -> str:
    """The chat template, wherever transformers put it (file, tokenizer or processor
    config; a list of named templates picks "default")."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for config in ("tokenizer_config.json", "chat_template.json"):
        template = read_json(folder / config).get("chat_template")
        if isinstance(template, list):
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default") or next(iter(named.values()), None)
        if isinstance(template, str) and template:
            return template
    return ""


def quantization_level(config: dict[str, Any], by_dtype: dict[str, int]) -> str:
    quant = config.get("quantization_config")
    if isinstance(quant, dict) and quant.get("quant_method"):
        return str(quant["quant_method"]).upper()
    dtype = config.get("dtype") or config.get("torch_dtype")
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    return max(by_dtype, key=lambda k: by_dtype[k]) if by_dtype else "unknown"


def capabilities(folder: Path, config: dict[str, Any], template: str) -> list[str]:
    """What the model can do, in Ollama's words, from its architecture and template."""
    archs = [str(a) for a in config.get("architectures") or []]
    headless = any(a.endswith("Model") and not a.endswith(_CAUSAL) for a in archs)
    embedding = headless or (folder / "modules.json").is_file()  # sentence-transformers
    found = []
    if not embedding and any(a.endswith(_CAUSAL) for a in archs):
        found.append("completion")
    if template and _TOOLS.search(template):
        found.append("tools")
    if template and _THINKING.search(template):
        found.append("thinking")
    if "vision_config" in config:
        found.append("vision")
    if embedding:
        found.append("embedding")
    return found


_INFO_KEYS = (  # (Ollama model_info suffix, HF config keys in order of preference)
    ("context_length", ("max_position_embeddings", "n_positions")),
    ("embedding_length", ("hidden_size", "n_embd")),
    ("block_count", ("num_hidden_layers", "n_layer")),
    ("feed_forward_length", ("intermediate_size", "n_inner")),
    ("attention.head_count", ("num_attention_heads", "n_head")),
    ("attention.head_count_kv", ("num_key_value_heads",)),
    ("attention.key_length", ("head_dim",)),
    ("attention.value_length", ("head_dim",)),
    ("attention.layer_norm_rms_epsilon", ("rms_norm_eps",)),
    ("rope.freq_base", ("rope_theta",)),
    ("vocab_size", ("vocab_size",)),
)


def model_info(name: str, config: dict[str, Any], parameters: int) -> dict[str, Any]:
    """Ollama's ``model_info`` (GGUF-style keys) from the HF config; absent keys omitted."""
    arch = str(config.get("model_type") or "unknown")
    text = {**config, **(config.get("text_config") or {})}  # multimodal: the LM's numbers
    rope = text.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" not in text:
        text["rope_theta"] = rope.get("rope_theta")
    info: dict[str, Any] = {
        "general.architecture": arch,
        "general.basename": names.model_part(name),
        "general.parameter_count": parameters,
    }
    for suffix, keys in _INFO_KEYS:
        value = next((text[k] for k in keys if text.get(k) is not None), None)
        if value is not None:
            info[f"{arch}.{suffix}"] = value
    return info


def describe_folder(folder: Path, name: str, fmt: str = "safetensors") -> FolderInfo:
    """Everything ``/api/show`` says about the HF folder ``folder`` served as ``name``."""
    config = read_json(folder / "config.json")
    parameters, by_dtype = tensor_stats(folder)
    template = chat_template(folder)
    family = str(config.get("model_type") or "unknown")
    details = {
        "parent_model": "",
        "format": fmt,
        "family": family,
        "families": [family],
        "parameter_size": human_count(parameters),
        "quantization_level": quantization_level(config, by_dtype),
    }
    return FolderInfo(
        details=details,
        model_info=model_info(name, config, parameters),
        capabilities=capabilities(folder, config, template),
        template=template,
    )
