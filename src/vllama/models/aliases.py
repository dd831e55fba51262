"""Which Hugging Face repo a name typed to ``pull`` means.

Why: Ollama users type ``llama3.2:3b``; the Hub knows
``meta-llama/Llama-3.2-3B-Instruct``. Three spellings are accepted, checked in
this order:

1. ``hf.co/org/repo[:revision]`` (or ``huggingface.co/...``): a Hub id, said so;
2. a name in the alias catalogue: ``aliases.toml`` shipped beside this module,
   overlaid by ``$VLLAMA_HOME/aliases.toml`` (the user's entries win);
3. ``org/repo[:revision]``: any other two-part name is a Hub id.

A tag is the Hub revision (branch, tag or commit), and ``:latest`` (or no tag)
means ``main``, so ``org/repo`` and ``org/repo:latest`` are the same pull. The
model is stored under the name as typed (``names.display_name``), so what
``/api/tags`` lists is what the user pulled. Lookups ignore case, as every name
lookup does.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from vllama.errors import BadRequest, VllamaError
from vllama.models import names

SHIPPED = Path(__file__).with_name("aliases.toml")
HUB_HOSTS = ("hf.co", "huggingface.co")
DEFAULT_REVISION = "main"


class UnknownModel(VllamaError):
    """A short name that is neither in the catalogue nor a Hub id."""

    status = 404
    openai_type = "not_found_error"


@dataclass(frozen=True)
class HubRef:
    """One revision of one Hub repo."""

    repo_id: str  #: "org/repo", case as written
    revision: str = DEFAULT_REVISION

    @property
    def source(self) -> str:
        """How the store's manifest records where a model came from."""
        return f"hf:{self.repo_id}@{self.revision}"


@dataclass(frozen=True)
class PullTarget:
    name: str  #: display name the model is stored under
    hub: HubRef


def _parse_ref(text: str) -> HubRef:
    repo, _, revision = text.strip().partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ValueError(f"{text!r} is not a Hugging Face repo id (org/repo[@revision])")
    return HubRef(repo, revision or DEFAULT_REVISION)


def read_aliases(path: Path) -> dict[str, HubRef]:
    """The ``[aliases]`` table of ``path`` (normalized name -> repo); {} if there is none."""
    if not path.is_file():
        return {}
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("aliases", {})
        return {names.normalize(k): _parse_ref(str(v)) for k, v in dict(table).items()}
    except (tomllib.TOMLDecodeError, ValueError, TypeError) as exc:
        raise BadRequest(f"alias file {path}: {exc}") from exc


class Aliases:
    """The shipped catalogue overlaid by the user's file (re-read when it changes)."""

    def __init__(self, user_file: Path | None = None, shipped: Path = SHIPPED) -> None:
        self.user_file = user_file
        self._shipped = read_aliases(shipped)
        self._user: dict[str, HubRef] = {}
        self._user_mtime: int | None = None

    def table(self) -> dict[str, HubRef]:
        return {**self._shipped, **self._user_entries()}

    def _user_entries(self) -> dict[str, HubRef]:
        if self.user_file is None:
            return {}
        try:
            mtime = self.user_file.stat().st_mtime_ns
        except OSError:
            return {}
        if mtime != self._user_mtime:
            self._user = read_aliases(self.user_file)
            self._user_mtime = mtime
        return self._user

    def resolve(self, typed: str) -> PullTarget:
        """What pulling ``typed`` means; BadRequest for a malformed name, UnknownModel
        for a short name the catalogue does not know."""
        text = typed.strip()
        for scheme in ("https://", "http://"):
            if text.lower().startswith(scheme):
                text = text[len(scheme) :]
        if not names.is_valid(text):
            raise BadRequest("invalid model name", param="model")
        name = names.display_name(text)
        prefix, _, _ = text.rpartition("/")
        parts = prefix.split("/") if prefix else []
        model, _, tag = text.rsplit("/", 1)[-1].partition(":")
        revision = DEFAULT_REVISION if tag.lower() in ("", names.DEFAULT_TAG) else tag
        if len(parts) == 2 and parts[0].lower() in HUB_HOSTS:
            return PullTarget(name, HubRef(f"{parts[1]}/{model}", revision))
        alias = self.table().get(names.normalize(text))
        if alias is not None:
            return PullTarget(name, alias)
        if len(parts) == 1:
            return PullTarget(name, HubRef(f"{parts[0]}/{model}", revision))
        raise UnknownModel(
            f"pull model manifest: {typed!r} is not in vLLama's alias catalogue; "
            "pull a Hugging Face repo id (org/repo) or add an alias"
        )
