"""The ``vllama`` command."""

from __future__ import annotations

import click

from vllama import __version__
from vllama.cli.engine import engine_group
from vllama.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vllama")
def cli() -> None:
    """vLLama: Ollama's API and CLI in front of vLLM."""


cli.add_command(serve)
cli.add_command(engine_group)


def main() -> None:
    cli()
