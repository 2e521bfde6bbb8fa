"""The root command ``v2g`` (typer): its options, and the group every command module registers on."""

from __future__ import annotations

from typing import Annotated

import typer

from backend.cli.errors import NamedErrorGroup

app = typer.Typer(
    cls=NamedErrorGroup,
    help="v2g-settle: V2G scheduling and on-chain settlement for an EV aggregator.",
)


def _configured_log_file() -> str | None:
    """``log_file`` of the configuration file, if it can be read (a bad file is named by the command)."""
    from backend.config import ConfigFileError, read_config

    try:
        value = read_config().get("log_file")
    except ConfigFileError:
        return None
    return str(value) if value else None


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback of an error instead of its one line.")
    ] = False,
) -> None:
    import os

    from backend.logs import configure
    from backend.runtime import tune_gc

    # V2G_LOG_FILE (or log_file in the configuration): JSON lines at INFO beside the console's warnings
    log_file = os.environ.get("V2G_LOG_FILE") or _configured_log_file()
    configure(verbose=verbose, log_file=log_file)
    tune_gc()
