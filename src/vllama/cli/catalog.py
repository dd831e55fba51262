"""``vllama list|show|rm|cp``: the models a server has, over its Ollama API."""

from __future__ import annotations

import json
from datetime import datetime

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vllama.cli.client import ClientError, client_for, host_option
from vllama.cli.status import ExitStatus


def _fail(err: ClientError) -> SystemExit:
    Console(stderr=True).print(f"[red]Error:[/red] {escape(err.message)}")
    return SystemExit(ExitStatus.ERROR)


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _when(text: str) -> str:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return text


@click.command("list")
@host_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_models(host: str | None, as_json: bool) -> None:
    """List the models on the server."""
    try:
        models = client_for(host).tags()
    except ClientError as err:
        raise _fail(err) from err
    if as_json:
        click.echo(json.dumps(models))
        return
    table = Table("NAME", "ID", "SIZE", "MODIFIED", box=None, pad_edge=False)
    for m in models:
        digest = str(m.get("digest", "")).split(":")[-1][:12]
        table.add_row(
            escape(m["name"]), digest, _size(int(m.get("size", 0))), _when(m["modified_at"])
        )
    Console().print(table)


@click.command()
@click.argument("name")
@host_option
@click.option("--modelfile", is_flag=True, help="Show the Modelfile.")
@click.option("--parameters", is_flag=True, help="Show the default parameters.")
@click.option("--system", is_flag=True, help="Show the system prompt.")
@click.option("--template", is_flag=True, help="Show the chat template.")
@click.option("--json", "as_json", is_flag=True, help="The whole /api/show answer.")
def show(
    name: str,
    host: str | None,
    modelfile: bool,
    parameters: bool,
    system: bool,
    template: bool,
    as_json: bool,
) -> None:
    """Show what a model is: architecture, size, context, capabilities."""
    try:
        info = client_for(host).show(name)
    except ClientError as err:
        raise _fail(err) from err
    for flag, key in (
        (modelfile, "modelfile"),
        (parameters, "parameters"),
        (system, "system"),
        (template, "template"),
    ):
        if flag:
            click.echo(info.get(key, ""))
            return
    if as_json:
        click.echo(json.dumps(info))
        return
    details = info.get("details", {})
    model_info = info.get("model_info", {})
    arch = model_info.get("general.architecture", details.get("family", ""))
    rows = [
        ("architecture", arch),
        ("parameters", details.get("parameter_size", "")),
        ("context length", model_info.get(f"{arch}.context_length", "")),
        ("embedding length", model_info.get(f"{arch}.embedding_length", "")),
        ("quantization", details.get("quantization_level", "")),
        ("format", details.get("format", "")),
    ]
    console = Console()
    console.print("  Model")
    for key, value in rows:
        if value != "":
            console.print(f"    {key:<20}{escape(str(value))}")
    console.print("\n  Capabilities")
    for cap in info.get("capabilities") or []:
        console.print(f"    {cap}")
    if info.get("parameters"):
        console.print("\n  Parameters")
        for line in str(info["parameters"]).splitlines():
            console.print(f"    {escape(line)}")
    if info.get("system"):
        console.print("\n  System")
        console.print(f"    {escape(str(info['system']))}")


@click.command()
@click.argument("names", nargs=-1, required=True)
@host_option
def rm(names: tuple[str, ...], host: str | None) -> None:
    """Remove models."""
    client = client_for(host)
    for name in names:
        try:
            client.delete(name)
        except ClientError as err:
            raise _fail(err) from err
        click.echo(f"deleted '{name}'")


@click.command()
@click.argument("source")
@click.argument("destination")
@host_option
def cp(source: str, destination: str, host: str | None) -> None:
    """Copy a model under another name (no bytes copied)."""
    try:
        client_for(host).copy(source, destination)
    except ClientError as err:
        raise _fail(err) from err
    click.echo(f"copied '{source}' to '{destination}'")
