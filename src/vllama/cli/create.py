"""``vllama create NAME -f Modelfile``: a model from a GGUF file or another model,
or a LoRA adapter (``ADAPTER ./folder``) on a model, with its own SYSTEM prompt and
PARAMETER defaults.

As the ``ollama`` CLI does, the Modelfile is read here and a local file named by
``FROM`` is uploaded as a blob (``/api/blobs/sha256:...``, skipped when the server
has it), then ``/api/create`` gets ``files`` (or ``from`` for a model name),
``system`` and ``parameters``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from vllama.cli.client import Client, ClientError, client_for, host_option
from vllama.cli.status import ExitStatus
from vllama.errors import BadRequest
from vllama.models.modelfile import Modelfile, parse_modelfile


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def _local_file(source: str, base: Path) -> Path | None:
    """FROM names a file when it looks like a path and exists."""
    if not (source.startswith((".", "/", "~")) or source.lower().endswith(".gguf")):
        return None
    path = Path(source).expanduser()
    path = path if path.is_absolute() else base / path
    return path if path.is_file() else None


def _upload(client: Client, path: Path, say: Any) -> str:
    digest = sha256_of(path)
    if not client.has_blob(digest):
        say(f"copying file {digest[:19]} ({path.stat().st_size / 1e6:.0f} MB)")
        client.upload_blob(digest, path)
    return digest


def _upload_adapters(adapters: list[str], base: Path, client: Client, say: Any) -> dict[str, str]:
    """ADAPTER paths (a PEFT folder, or its files) as ``{file name: digest}``."""
    uploaded: dict[str, str] = {}
    for adapter in adapters:
        path = Path(adapter).expanduser()
        path = path if path.is_absolute() else base / path
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file())
        elif path.is_file():
            files = [path]
        else:
            raise ClientError(f"ADAPTER {adapter}: no such file or folder")
        say(f"gathering adapter files ({path.name})")
        for file in files:
            uploaded[file.name] = _upload(client, file, say)
    return uploaded


def build_request(
    name: str, parsed: Modelfile, base: Path, client: Client, say: Any
) -> dict[str, Any]:
    request: dict[str, Any] = {"model": name}
    if parsed.system is not None:
        request["system"] = parsed.system
    if parsed.parameters:
        request["parameters"] = parsed.parameters
    if parsed.template is not None:
        request["template"] = parsed.template
    if parsed.adapters:
        request["adapters"] = _upload_adapters(parsed.adapters, base, client, say)
    file = _local_file(parsed.from_, base)
    if file is None:
        if parsed.from_.startswith((".", "/", "~")):
            raise ClientError(f"FROM {parsed.from_}: no such file")
        request["from"] = parsed.from_
        return request
    say(f"gathering model components ({file.name})")
    request["files"] = {file.name: _upload(client, file, say)}
    return request


@click.command()
@click.argument("name")
@click.option(
    "-f",
    "--file",
    "modelfile",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("Modelfile"),
    show_default=True,
    help="The Modelfile.",
)
@host_option
def create(name: str, modelfile: Path, host: str | None) -> None:
    """Create a model from a Modelfile (FROM ./model.gguf or FROM another model)."""
    console = Console(stderr=True)
    client = client_for(host)

    def say(line: str) -> None:
        console.print(escape(line), highlight=False)

    try:
        parsed = parse_modelfile(modelfile.read_text(encoding="utf-8"))
        request = build_request(name, parsed, modelfile.absolute().parent, client, say)
        for event in client.create(request):
            say(str(event.get("status", "")))
    except OSError as err:
        console.print(f"[red]Error:[/red] {escape(str(err))}")
        raise SystemExit(ExitStatus.ERROR) from err
    except BadRequest as err:
        console.print(f"[red]Error:[/red] {escape(err.message)}")
        raise SystemExit(ExitStatus.ERROR) from err
    except ClientError as err:
        console.print(f"[red]Error:[/red] {escape(err.message)}")
        raise SystemExit(ExitStatus.ERROR) from err
