"""Option parsers and option types: every option that takes a date, path, URL, id or number is
checked while it is parsed, before any work; defaults of ``--db`` and ``--fee-bps`` come from the
settings (``V2G_DATABASE_URL``, ``V2G_FEE_BPS``)."""

from __future__ import annotations

import datetime as dt
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from backend.cli.common import _settings
from backend.cli.errors import (
    InputFileNotFoundError,
    InvalidChainError,
    InvalidDateError,
    InvalidNumberError,
    InvalidPathError,
    InvalidRecordError,
    InvalidRoleError,
    _one_line,
)
from backend.db.session import DatabaseError, check_url

# --- option parsers (run while the options are parsed, before any work) --------------------------


def _date(option: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        try:
            return dt.date.fromisoformat(str(value).strip()).isoformat()
        except ValueError as exc:
            reason = str(exc) if "isoformat" not in str(exc) else "not a date"
            raise InvalidDateError(f"{option} {value}: {reason} (expected YYYY-MM-DD)") from None

    return parse


def _number_text(x: float) -> str:
    return f"{x:,}" if isinstance(x, int) else f"{x:g}"


def _range_text(lo: float | None, hi: float | None, open_lo: bool, open_hi: bool) -> str:
    if lo is not None and hi is not None:
        if open_lo and open_hi:
            return f"strictly between {_number_text(lo)} and {_number_text(hi)}"
        return f"from {_number_text(lo)} to {_number_text(hi)}"
    if lo is not None:
        return f"greater than {_number_text(lo)}" if open_lo else f"at least {_number_text(lo)}"
    assert hi is not None, "a range has at least one bound"
    return f"less than {_number_text(hi)}" if open_hi else f"at most {_number_text(hi)}"


def _integer(option: str, lo: int | None = None, hi: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise InvalidNumberError(f"{option} {value}: not a whole number") from None
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            raise InvalidNumberError(f"{option} {value}: must be {_range_text(lo, hi, False, False)}")
        return number

    return parse


def _real(
    option: str, lo: float | None, hi: float | None, *, open_lo: bool = False, open_hi: bool = False
) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise InvalidNumberError(f"{option} {value}: not a number") from None
        too_low = lo is not None and (number <= lo if open_lo else number < lo)
        too_high = hi is not None and (number >= hi if open_hi else number > hi)
        if not math.isfinite(number) or too_low or too_high:
            raise InvalidNumberError(f"{option} {value}: must be {_range_text(lo, hi, open_lo, open_hi)}")
        return number

    return parse


def _input_file(option: str) -> Callable[[Any], Path]:
    """An existing, readable file."""

    def parse(value: Any) -> Path:
        path = Path(str(value)).expanduser()
        if not path.exists():
            raise InputFileNotFoundError(f"{option} {value}: no such file")
        if not path.is_file():
            raise InvalidPathError(f"{option} {value}: not a file")
        if not os.access(path, os.R_OK):
            raise InvalidPathError(f"{option} {value}: not readable")
        return path

    return parse


def _output_file(
    option: str, *, reuse: bool = False, suffixes: tuple[str, ...] = ()
) -> Callable[[Any], Path]:
    """A file that can be written (its directory exists and is writable); with ``reuse`` an existing
    file must also be readable; with ``suffixes`` its name must end in one of them."""

    def parse(value: Any) -> Path:
        path = Path(str(value)).expanduser()
        parent = path.parent
        if path.is_dir():
            raise InvalidPathError(f"{option} {value}: is a directory")
        if not parent.is_dir():
            missing = "is not a directory" if parent.exists() else "does not exist"
            raise InvalidPathError(f"{option} {value}: directory {parent} {missing}")
        if path.exists():
            if not os.access(path, os.W_OK):
                raise InvalidPathError(f"{option} {value}: file is not writable")
            if reuse and not os.access(path, os.R_OK):
                raise InvalidPathError(f"{option} {value}: file is not readable")
        elif not os.access(parent, os.W_OK):
            raise InvalidPathError(f"{option} {value}: directory {parent} is not writable")
        if suffixes and path.suffix.lower() not in suffixes:
            raise InvalidPathError(f"{option} {value}: the file name must end in {', '.join(suffixes)}")
        return path

    return parse


def _deployment_record(option: str) -> Callable[[Any], Path]:
    """A deployment record to write, or an existing one to reuse (then it must read as a record)."""
    writable = _output_file(option, reuse=True)

    def parse(value: Any) -> Path:
        path = writable(value)
        if path.exists():
            from backend.chain.deploy import DeploymentRecord

            try:
                DeploymentRecord.from_json(path.read_text())
            except (ValueError, TypeError) as exc:
                raise InvalidRecordError(
                    f"{option} {value}: not a deployment record ({_one_line(str(exc))})"
                ) from None
        return path

    return parse


def _database(option: str, *, must_exist: bool = False) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        try:
            check_url(str(value), must_exist=must_exist)
        except DatabaseError as exc:
            raise type(exc)(f"{option} {exc}") from None
        return str(value)

    return parse


def _chain(option: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        spec = str(value).strip()
        if spec in ("eth-tester", "anvil"):
            return spec
        parts = urlsplit(spec)
        if parts.scheme in ("ws", "wss"):
            raise InvalidChainError(
                f"{option} {value}: WebSocket endpoints are not supported (the chain client speaks "
                "HTTP JSON-RPC); use the node's http(s):// URL"
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidChainError(
                f"{option} {value}: not a chain (use eth-tester, anvil or an http(s):// JSON-RPC URL)"
            )
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise InvalidChainError(f"{option} {value}: malformed port") from None
        return spec

    return parse


def _role(option: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        from backend.api.security import Role

        try:
            return Role(str(value)).value
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise InvalidRoleError(f"{option} {value}: not a role ({allowed})") from None

    return parse


UINT63 = 2**63 - 1  # the largest id a SQL BIGINT holds

DateOpt = Annotated[
    str,
    typer.Option(
        parser=_date("--date"), metavar="YYYY-MM-DD", help="UTC day, within the price data (NL: 2015-2023)."
    ),
]
SeedOpt = Annotated[
    int, typer.Option(parser=_integer("--seed", 0), metavar="INTEGER", help="Fleet generator seed (≥ 0).")
]
ChainOpt = Annotated[
    str | None,
    typer.Option(
        parser=_chain("--chain"),
        metavar="CHAIN",
        help="eth-tester (embedded, kept in the data directory), anvil (managed local node) or an "
        "http(s):// JSON-RPC URL (keys: V2G_<ROLE>_KEY); default: V2G_CHAIN, else the chain the database "
        "settles on, else eth-tester.",
    ),
]
FeeOpt = Annotated[
    int | None,
    typer.Option(
        parser=_integer("--fee-bps", 0, 10_000),
        metavar="INTEGER",
        help="Aggregator fee, basis points; default: V2G_FEE_BPS, else 100.",
    ),
]


def _default_database() -> str:
    return _settings().database_url


DbOpt = Annotated[
    str,
    typer.Option(
        parser=_database("--db"),
        default_factory=_default_database,
        metavar="URL",
        help="SQLAlchemy URL of the database; default: V2G_DATABASE_URL, else database_url of v2g.toml, else "
        "sqlite:///v2g.sqlite.",
    ),
]
ExistingDbOpt = Annotated[
    str,
    typer.Option(
        parser=_database("--db", must_exist=True),
        default_factory=_default_database,
        metavar="URL",
        help="SQLAlchemy URL of an existing database; default: V2G_DATABASE_URL, else database_url of "
        "v2g.toml, else sqlite:///v2g.sqlite.",
    ),
]


ReadChainOpt = Annotated[
    str | None,
    typer.Option(
        parser=_chain("--chain"),
        metavar="CHAIN",
        help="eth-tester, anvil or a JSON-RPC URL, read only; default: the chain the database settles on.",
    ),
]


ClockToleranceOpt = Annotated[
    float,
    typer.Option(
        parser=_real("--clock-tolerance-s", 1.0, 30 * 86400.0),
        metavar="SECONDS",
        help="The metering service's policy: a sample further than this from the time the CSMS received "
        "it is refused (ClockSkewError).",
    ),
]


AuditToleranceOpt = Annotated[
    float | None,
    typer.Option(
        "--clock-tolerance-s",
        parser=_real("--clock-tolerance-s", 1.0, 30 * 86400.0),
        metavar="SECONDS",
        help="Replay with this clock tolerance instead of the policy the metering service recorded when it "
        "signed the day (default: that policy; 900 s when nothing was signed).",
    ),
]
AuditFeeOpt = Annotated[
    int | None,
    typer.Option(
        "--fee-bps",
        parser=_integer("--fee-bps", 0, 10_000),
        metavar="INTEGER",
        help="Aggregator fee, basis points (default: the one the metering service recorded; else 100).",
    ),
]


def _directory(option: str, *, create: bool = False) -> Callable[[Any], Path]:
    def parse(value: Any) -> Path:
        path = Path(str(value)).expanduser()
        if path.exists() and not path.is_dir():
            raise InvalidPathError(f"{option} {value}: not a directory")
        if not path.exists():
            if not create:
                raise InputFileNotFoundError(f"{option} {value}: no such directory")
            # missing parents are created as the case study does; the nearest existing one must be a folder
            existing = next(p for p in path.absolute().parents if p.exists())
            if not existing.is_dir():
                raise InvalidPathError(f"{option} {value}: {existing} is not a directory")
        return path

    return parse
