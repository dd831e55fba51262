"""What a name typed to `pull` means: Hub ids, the alias catalogue, revisions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vllama.errors import BadRequest
from vllama.models.aliases import SHIPPED, Aliases, HubRef, UnknownModel, read_aliases
from vllama.models.hub import select


@pytest.mark.parametrize(
    ("typed", "name", "repo", "revision"),
    [
        (
            "Qwen/Qwen2.5-0.5B-Instruct",
            "Qwen/Qwen2.5-0.5B-Instruct:latest",
            "Qwen/Qwen2.5-0.5B-Instruct",
            "main",
        ),
        ("org/repo:latest", "org/repo:latest", "org/repo", "main"),
        ("org/repo:v1.0", "org/repo:v1.0", "org/repo", "v1.0"),
        ("hf.co/org/repo", "hf.co/org/repo:latest", "org/repo", "main"),
        ("https://huggingface.co/org/repo:dev", "huggingface.co/org/repo:dev", "org/repo", "dev"),
        ("llama3.2:3b", "llama3.2:3b", "meta-llama/Llama-3.2-3B-Instruct", "main"),
        ("LLAMA3.2:3B", "LLAMA3.2:3B", "meta-llama/Llama-3.2-3B-Instruct", "main"),
        ("qwen2.5:0.5b", "qwen2.5:0.5b", "Qwen/Qwen2.5-0.5B-Instruct", "main"),
        ("llama3.2", "llama3.2:latest", "meta-llama/Llama-3.2-3B-Instruct", "main"),
        ("llama3.2:latest", "llama3.2:latest", "meta-llama/Llama-3.2-3B-Instruct", "main"),
    ],
)
def test_resolve(typed: str, name: str, repo: str, revision: str) -> None:
    target = Aliases().resolve(typed)
    assert (target.name, target.hub) == (name, HubRef(repo, revision))


def test_user_file_overrides_and_extends(tmp_path: Path) -> None:
    user = tmp_path / "aliases.toml"
    user.write_text('[aliases]\n"llama3.2:3b" = "me/llama@abc"\n"Mine" = "me/mine"\n')
    aliases = Aliases(user)
    assert aliases.resolve("llama3.2:3b").hub == HubRef("me/llama", "abc")
    assert aliases.resolve("mine:latest").hub == HubRef("me/mine")
    user.write_text('[aliases]\n"other" = "me/other"\n')
    os.utime(user, ns=(1, 1))  # a changed file is read again
    assert aliases.resolve("llama3.2:3b").hub.repo_id == "meta-llama/Llama-3.2-3B-Instruct"


@pytest.mark.parametrize("typed", ["", "a b", "x/y/z/w", "model:", "../etc"])
def test_invalid_names(typed: str) -> None:
    with pytest.raises(BadRequest, match="invalid model name"):
        Aliases().resolve(typed)


def test_unknown_short_name() -> None:
    with pytest.raises(UnknownModel) as caught:
        Aliases().resolve("nosuchmodel:9b")
    assert caught.value.status == 404


def test_bad_alias_file(tmp_path: Path) -> None:
    bad = tmp_path / "aliases.toml"
    bad.write_text('[aliases]\n"x" = "not-a-repo"\n')
    with pytest.raises(BadRequest, match="not a Hugging Face repo id"):
        read_aliases(bad)


def test_shipped_catalogue_is_valid() -> None:
    table = read_aliases(SHIPPED)
    assert len(table) > 20
    assert all(ref.repo_id.count("/") == 1 for ref in table.values())


def test_select_takes_what_vllm_reads() -> None:
    repo = [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "tokenizer.json",
        "tokenizer.model",
        "chat_template.jinja",
        "merges.txt",
        "README.md",
        ".gitattributes",
        "original/consolidated.00.pth",
        "onnx/model.onnx",
        "model.Q4_K_M.gguf",
    ]
    assert select(repo) == [
        "chat_template.jinja",
        "config.json",
        "merges.txt",
        "model-00001-of-00002.safetensors",
        "model.safetensors.index.json",
        "tokenizer.json",
        "tokenizer.model",
    ]
    assert "pytorch_model.bin" in select(["config.json", "pytorch_model.bin"])
