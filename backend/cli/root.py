"""The root command ``v2g`` (typer): its options, and the group every command module registers on."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.logging import RichHandler

from backend.cli.errors import NamedErrorGroup

app = typer.Typer(
    cls=NamedErrorGroup,
    help="v2g-settle: V2G scheduling and on-chain settlement for an EV aggregator.",
)


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an error instead of its one line.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )
