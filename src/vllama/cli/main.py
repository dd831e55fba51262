"""The ``vllama`` command."""

from __future__ import annotations

import click

from vllama import __version__
from vllama.cli.bench import bench
from vllama.cli.catalog import cp, list_models, rm, show
from vllama.cli.create import create
from vllama.cli.engine import engine_group
from vllama.cli.keys import keys_group
from vllama.cli.pull import pull
from vllama.cli.serve import serve
from vllama.cli.usage import usage


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vllama")
def cli() -> None:
    """vLLama: Ollama's API and CLI in front of vLLM."""


cli.add_command(serve)
cli.add_command(pull)
cli.add_command(list_models)
cli.add_command(list_models, name="ls")
cli.add_command(show)
cli.add_command(rm)
cli.add_command(cp)
cli.add_command(create)
cli.add_command(engine_group)
cli.add_command(keys_group)
cli.add_command(usage)
cli.add_command(bench)


def main() -> None:
    cli()
