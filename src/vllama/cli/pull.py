"""``vllama pull NAME``: download a model through the server, with progress bars."""

from __future__ import annotations

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from vllama.cli.client import ClientError, client_for, host_option
from vllama.cli.status import ExitStatus


@click.command()
@click.argument("name")
@host_option
def pull(name: str, host: str | None) -> None:
    """Pull a model from the Hugging Face Hub (org/repo[:revision], or a catalogue name)."""
    console = Console(stderr=True)
    bars: dict[str, TaskID] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            for event in client_for(host).pull(name):
                status = str(event.get("status", ""))
                if "total" in event:
                    task = bars.get(status)
                    if task is None:
                        task = progress.add_task(escape(status), total=int(event["total"]))
                        bars[status] = task
                    progress.update(task, completed=int(event.get("completed") or 0))
                elif status != "success":
                    progress.console.print(escape(status), highlight=False)
    except ClientError as err:
        console.print(f"[red]Error:[/red] {escape(err.message)}")
        raise SystemExit(ExitStatus.ERROR) from err
    console.print("success")
