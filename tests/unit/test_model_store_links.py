"""Store entries that share bytes: Hub snapshots linked in, copies as hard links,
and manifest updates (a created model's SYSTEM and PARAMETERs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_model_store import make_folder
from vllama.errors import BadRequest, ModelNotFound
from vllama.models.catalog import Catalog, ModelNotLoaded, ServedModel
from vllama.models.store import ModelStore
from vllama.server.switch import lora_args


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    return ModelStore(tmp_path / "models")


def test_add_linked_points_at_the_snapshot(store: ModelStore, tmp_path: Path) -> None:
    snapshot = make_folder(tmp_path / "snap")
    files = {p.name: p for p in snapshot.iterdir()}
    model = store.add_linked(files, "Org/Repo", "hf:Org/Repo@main", "a" * 40)
    assert model.name == "Org/Repo:latest"
    assert model.digest == "a" * 40
    assert model.source == "hf:Org/Repo@main"
    assert (model.path / "model.safetensors").is_symlink()
    assert model.size == sum(p.stat().st_size for p in snapshot.iterdir())
    assert model.details["family"] == "llama"
    store.remove("org/repo")
    assert (snapshot / "model.safetensors").exists()  # the cache keeps its files
    with pytest.raises(BadRequest, match=r"no config\.json"):
        store.add_linked({"x.json": snapshot / "tokenizer.json"}, "x", "hf:x", "b" * 40)


def test_copy_is_hard_links_and_survives_the_source(store: ModelStore, tmp_path: Path) -> None:
    store.add_from_dir(make_folder(tmp_path / "src"), "base", "test")
    copy = store.copy("base", "Mine", parent="base:latest", system="Be brief.")
    base = store.get("base")
    assert base is not None
    assert copy.digest == base.digest
    assert copy.system == "Be brief."
    assert copy.details["parent_model"] == "base:latest"
    assert (copy.path / "model.safetensors").stat().st_ino == (
        base.path / "model.safetensors"
    ).stat().st_ino
    assert base.system == ""  # the source's manifest is untouched
    store.remove("base")
    assert store.get("mine") is not None
    with pytest.raises(ModelNotFound):
        store.copy("base", "other")


def test_update_changes_the_manifest(store: ModelStore, tmp_path: Path) -> None:
    store.add_from_dir(make_folder(tmp_path / "src"), "base", "test")
    updated = store.update("base", parameters={"num_predict": 3}, system="Hi")
    assert (updated.parameters, updated.system) == ({"num_predict": 3}, "Hi")
    again = store.get("BASE")
    assert again is not None
    assert again.parameters == {"num_predict": 3}
    with pytest.raises(ModelNotFound):
        store.update("nope", system="x")


def test_catalog_serves_same_weights_under_another_name(store: ModelStore, tmp_path: Path) -> None:
    base = store.add_from_dir(make_folder(tmp_path / "src"), "base", "test")
    store.copy("base", "pirate", system="Arr.")
    store.add_from_dir(make_folder(tmp_path / "other", data=False), "other", "test")
    catalog = Catalog([ServedModel("base:latest", "base:latest", local=base)], store=store)
    pirate = catalog.resolve("Pirate")
    assert pirate.served_name == "base:latest"
    assert pirate.name == "pirate:latest"
    assert pirate.local is not None
    assert pirate.local.system == "Arr."
    with pytest.raises(ModelNotLoaded, match="on disk but not loaded"):
        catalog.resolve("other")
    with pytest.raises(ModelNotFound):
        catalog.resolve("missing")


def test_adapters_inherit_from_their_base_and_make_lora_flags(
    store: ModelStore, tmp_path: Path
) -> None:
    base = store.add_from_dir(make_folder(tmp_path / "src"), "base", "test")
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text('{"r": 40}')
    (lora / "adapter_model.safetensors").write_bytes(
        (tmp_path / "src" / "model.safetensors").read_bytes()
    )
    files = {p.name: p for p in lora.iterdir()}
    adapter = store.add_adapter(files, "Tuned", base, system="Arr.")
    assert adapter.adapter_of == "base:latest"
    assert adapter.capabilities == base.capabilities
    assert adapter.details["format"] == "lora"
    assert adapter.system == "Arr."
    assert store.adapters_of("BASE") == [adapter]
    assert lora_args([adapter]) == [
        "--enable-lora",
        "--max-loras",
        "1",
        "--max-lora-rank",
        "64",
        "--lora-modules",
        f"Tuned:latest={adapter.path}",
    ]
    assert lora_args([]) == []
    with pytest.raises(BadRequest, match="adapter_config"):
        store.add_adapter({"x.safetensors": lora / "adapter_model.safetensors"}, "t2", base)
