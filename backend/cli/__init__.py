"""The ``v2g`` command line (typer + rich): one module per command group, the option parsers in
:mod:`backend.cli.options`, the named errors in :mod:`backend.cli.errors`, what people read in
:mod:`backend.cli.output`.

The commands only parse input, call a use case of the application layer (:mod:`backend.app`) or the
platform, and format its result; bad input gets one line ``ErrorName: what and where`` on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

from backend.cli.root import app

# the order modules register their commands is the order of `v2g --help`: the main job first
# isort: off
from backend.cli import settle, schedule, serve, audit, registry, prices, dr, meter, chain, backup, portfolio
# isort: on

__all__ = [
    "app",
    "audit",
    "backup",
    "chain",
    "dr",
    "meter",
    "portfolio",
    "prices",
    "registry",
    "schedule",
    "serve",
    "settle",
]
