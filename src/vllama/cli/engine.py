"""``vllama engine install|status``: manage the engine environment on this machine.

These commands act on local files (the venv under the data directory), not on
a running server, so unlike the other client commands they do not go through
the HTTP client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from vllama.cli.status import ExitStatus
from vllama.engine.install import (
    EngineInstallError,
    engine_dir,
    engine_installed,
    install_engine,
    read_marker,
)
from vllama.engine.spec import Kind, detect_kind
from vllama.settings import Settings, SettingsError, load_settings

_KIND = click.Choice(["auto", "cpu", "gpu"])


def _settings(home: Path | None, torch_index_url: str | None = None) -> Settings:
    try:
        return load_settings({"home": home, "torch_index_url": torch_index_url})
    except SettingsError as err:
        raise click.ClickException(f"bad configuration: {err}") from err


def _kind(settings: Settings, choice: str) -> Kind:
    if choice in ("cpu", "gpu"):
        return "gpu" if choice == "gpu" else "cpu"
    return detect_kind(settings)


@click.group("engine")
def engine_group() -> None:
    """Install and inspect the managed vLLM engine."""


@engine_group.command("install")
@click.option("--kind", "kind_choice", type=_KIND, default="auto", show_default=True)
@click.option("--torch-index-url", help="Extra pip index for torch (e.g. PyTorch's CPU index).")
@click.option("--home", type=click.Path(path_type=Path), help="Data directory.")
@click.option("-v", "--verbose", is_flag=True, help="Print every line of pip's output.")
def install(
    kind_choice: str, torch_index_url: str | None, home: Path | None, verbose: bool
) -> None:
    """Create the engine's virtual environment (a few GB; a no-op when done)."""
    settings = _settings(home, torch_index_url)
    kind = _kind(settings, kind_choice)
    console = Console(stderr=True)
    with console.status(f"installing the {kind} engine") as status:

        def progress(line: str) -> None:
            status.update(escape(line[:120]))
            if verbose:
                console.print(escape(line), highlight=False)

        try:
            python = install_engine(settings, kind, progress=progress)
        except EngineInstallError as err:
            console.print(f"[red]engine install failed:[/red] {escape(str(err))}")
            raise SystemExit(ExitStatus.ERROR) from err
    console.print(f"[green]engine ready[/green]: {python}")


@engine_group.command("status")
@click.option("--kind", "kind_choice", type=_KIND, default="auto", show_default=True)
@click.option("--home", type=click.Path(path_type=Path), help="Data directory.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(kind_choice: str, home: Path | None, as_json: bool) -> None:
    """Show whether the engine environment is installed, and its versions."""
    settings = _settings(home)
    kind = _kind(settings, kind_choice)
    marker = read_marker(settings, kind) or {}
    report: dict[str, Any] = {
        "kind": kind,
        "path": str(engine_dir(settings, kind)),
        "installed": engine_installed(settings, kind),
        **{key: marker.get(key) for key in ("vllm", "torch", "python", "installed_at")},
    }
    if as_json:
        click.echo(json.dumps(report))
    else:
        for key, value in report.items():
            click.echo(f"{key + ':':14}{'-' if value is None else value}")
    if not report["installed"]:
        raise SystemExit(ExitStatus.ERROR)
