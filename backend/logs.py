"""Where the platform's logs go: the console (warnings and errors; INFO with ``--verbose``), and, with
``log_file`` set, JSON lines to a rotating file at INFO: one event per line, with the ids it concerns
(``station``, ``transaction``, ``period``, ``job``) as fields of their own.

Libraries that talk at INFO about their own plumbing (the HTTP access log, the scheduler's every run, the
OpenADR client's every poll) are held to warnings everywhere: their INFO lines are not events of the
platform."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path

from pythonjsonlogger.json import JsonFormatter
from rich.console import Console
from rich.logging import RichHandler

#: Libraries whose INFO lines are plumbing, not events.
QUIET = (
    "uvicorn.access",
    "apscheduler",
    "openleadr",
    "distributed",
    "dask",
    "websockets",
    "httpx",
    "aiohttp",
)
#: A log file rolls over at this size, keeping this many old ones.
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 5


def json_handler(path: Path) -> logging.Handler:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=MAX_BYTES, backupCount=BACKUPS, encoding="utf-8"
    )
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{process}{message}",
            style="{",
            rename_fields={"asctime": "ts", "levelname": "level", "name": "logger", "process": "pid"},
            json_ensure_ascii=False,
        )
    )
    handler.setLevel(logging.INFO)
    return handler


def configure(*, verbose: bool = False, log_file: str | None = None) -> None:
    """The root logger's handlers for a command of the ``v2g`` CLI (replacing any set before)."""
    console = RichHandler(console=Console(stderr=True), show_path=False)
    console.setLevel(logging.INFO if verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(message)s"))
    handlers: list[logging.Handler] = [console]
    if log_file:
        handlers.append(json_handler(Path(log_file)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(min(h.level for h in handlers))
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
