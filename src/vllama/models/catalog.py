"""The names the gateway answers to, and which engine model each one is.

Clients type Ollama-style names (``smollm2:135m``, ``SmolLM2:135M``,
``qwen:latest``); engines know served ids (``smollm2:135m`` for a managed
engine, ``Qwen/Qwen2.5-0.5B-Instruct`` for an attached one). Every route
resolves through here, so ``/api/tags``, ``/v1/models`` and each request agree
on the same names, case-insensitively and with ``:latest`` defaulting.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from vllama.errors import ModelNotFound, VllamaError
from vllama.models.names import normalize
from vllama.models.store import LocalModel, ModelStore


class ModelNotLoaded(VllamaError):
    """The model is in the store but no engine serves it (no load-and-switch yet)."""

    status = 400
    openai_type = "invalid_request_error"


@dataclass(frozen=True)
class ServedModel:
    name: str
    served_name: str
    local: LocalModel | None = None
    max_model_len: int | None = None
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def capabilities(self) -> list[str]:
        return list(self.local.capabilities) if self.local else ["completion"]


class Catalog:
    """Name lookup; rebuilt, never mutated in place, so readers need no lock.

    With a ``store``, a name the engine does not serve but that is on disk with the
    same weights (same digest) as a served model (a ``copy``, or a ``create`` FROM it
    with its own SYSTEM and PARAMETERs) resolves to the served model, carrying its
    own ``local`` entry, so its defaults apply."""

    def __init__(
        self, models: list[ServedModel] | None = None, *, store: ModelStore | None = None
    ) -> None:
        self._models: tuple[ServedModel, ...] = ()
        self._index: dict[str, ServedModel] = {}
        self.store = store
        self.replace(models or [])

    def replace(self, models: list[ServedModel]) -> None:
        index: dict[str, ServedModel] = {}
        for model in models:
            index[model.name] = model
            index.setdefault(normalize(model.served_name), model)
            index.setdefault(model.served_name, model)
        self._models = tuple(models)
        self._index = index

    def all(self) -> tuple[ServedModel, ...]:
        return self._models

    def find(self, name: str) -> ServedModel | None:
        if not name:
            return None
        found = self._index.get(name)
        if found is None:
            try:
                found = self._index.get(normalize(name))
            except ValueError:
                return None
        if found is None and self.store is not None:
            found = self._same_weights(name)
        return found

    def _same_weights(self, name: str) -> ServedModel | None:
        assert self.store is not None
        local = self.store.get(name)
        if local is None:
            return None
        for model in self._models:
            if model.local is not None and model.local.digest == local.digest:
                return replace(model, name=local.name, local=local)
        return None

    def on_disk_only(self, name: str) -> LocalModel | None:
        """The stored model ``name`` when no engine can serve it (not loaded)."""
        if self.store is None or self.find(name) is not None:
            return None
        return self.store.get(name)

    def resolve(self, name: str) -> ServedModel:
        """The model for ``name`` as typed; ModelNotFound quotes it back as typed."""
        found = self.find(name)
        if found is None:
            if self.store is not None and self.store.get(name) is not None:
                served = ", ".join(m.name for m in self._models) or "nothing"
                raise ModelNotLoaded(
                    f"model '{name}' is on disk but not loaded (the engine serves {served}); "
                    f"start it with `vllama serve --model {name}`"
                )
            raise ModelNotFound(name)
        return found

    def update_from_engine(self, listing: dict[str, Any]) -> None:
        """Merge an engine's ``/v1/models`` answer: context lengths, and in
        attach mode the models themselves."""
        entries = [m for m in listing.get("data", []) if isinstance(m, dict) and "id" in m]
        known = {m.served_name: m for m in self._models}
        merged: list[ServedModel] = []
        for entry in entries:
            served = str(entry["id"])
            length = entry.get("max_model_len")
            length = length if isinstance(length, int) else None
            current = known.pop(served, None)
            if current is None:
                current = ServedModel(name=normalize(served), served_name=served)
            merged.append(replace(current, max_model_len=length or current.max_model_len))
        merged.extend(known.values())
        self.replace(merged)
