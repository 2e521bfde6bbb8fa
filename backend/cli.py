"""The ``v2g`` command line (typer + rich).

Bad input gets one line ``ErrorName: what and where`` on stderr and exit code 2, never a traceback:
options that take a date, path, URL, id or number are checked as they are parsed (before any work),
and :func:`_named_errors` turns the named errors of the layers below into that one line. Anything
unexpected is one ``InternalError`` line and exit code 1; ``v2g --debug ...`` shows the traceback.

Money shown to people is in EUR; the settlement token has ``TOKEN_DECIMALS`` (6) decimals, so one EUR
is 1,000,000 base units, and base units appear only in machine output (JSON, CSV, on chain).
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy import select
from typer.core import TyperGroup

from backend.db.session import DatabaseError, check_url, probe
from backend.settlement.tariff import TOKEN_DECIMALS
from scheduler.datasets import PRICES_NL, load_prices
from scheduler.errors import SchedulerError

if TYPE_CHECKING:
    from ssl import SSLContext

    import pandas as pd

    from backend.platform import Platform
    from backend.settlement.service import DayResult
    from scheduler.schedule import Kpis

# Full width in a terminal; a fixed, wide layout in logs and pipes (CI, `make demo | tee`).
console = Console(width=None if sys.stdout.isatty() else 132)
# Error lines: stderr, never wrapped, no markup or highlighting taken from the message.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


# --- errors the command line names itself --------------------------------------------------------


class CliInputError(Exception):
    """Bad input found by the command line itself; the message names the option and its value."""


class InvalidDateError(CliInputError):
    """Not a calendar date in the form YYYY-MM-DD."""


class DateOutOfRangeError(CliInputError):
    """A date the price data does not cover."""


class InvalidNumberError(CliInputError):
    """Not a number, or a number outside the option's range."""


class InputFileNotFoundError(CliInputError):
    """A file to read does not exist."""


class InvalidPathError(CliInputError):
    """A path that cannot be read or written as asked (a directory, a missing directory, no permission)."""


class InvalidRecordError(CliInputError):
    """A deployment record to reuse that is not one."""


class InvalidChainError(CliInputError):
    """Not eth-tester, anvil or an http(s):// JSON-RPC URL."""


class ChainUnreachableError(CliInputError):
    """A JSON-RPC endpoint that does not answer."""


class MissingKeysError(CliInputError):
    """A remote chain without signing keys for a command that sends transactions."""


class InvalidSigningKeyError(CliInputError):
    """A signing key from the environment that is not a private key."""


class AddressUnavailableError(CliInputError):
    """A host and port the API server cannot bind."""


class InvalidRoleError(CliInputError):
    """An API key role other than operator, owner or auditor."""


class InvalidKeyError(CliInputError):
    """An API key request that does not fit its role."""


class UnknownOwnerError(CliInputError):
    """An owner id that the database does not know."""


class NoDeploymentError(CliInputError):
    """A database without a deployment."""


class EntryNotFoundError(CliInputError):
    """A period or entry that the database does not hold."""


class InvalidOwnerFileError(CliInputError):
    """An owner registry file that is not a CSV of owner_id,address rows."""


class InvalidRegistryFileError(CliInputError):
    """A station or idToken registry file that cannot be imported as it is."""


class UnknownStationError(CliInputError):
    """A station id that is not in the registry (``v2g stations import``)."""


class InvalidTlsError(CliInputError):
    """A TLS certificate and key that cannot serve (``v2g operate --tls-cert/--tls-key``)."""


class UsageError(CliInputError):
    """A forwarded command's own argument parser refused the arguments."""


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
    int,
    typer.Option(
        parser=_integer("--fee-bps", 0, 10_000), metavar="INTEGER", help="Aggregator fee, basis points."
    ),
]
DbOpt = Annotated[
    str,
    typer.Option(parser=_database("--db"), metavar="URL", help="SQLAlchemy URL of the database."),
]
ExistingDbOpt = Annotated[
    str,
    typer.Option(
        parser=_database("--db", must_exist=True),
        metavar="URL",
        help="SQLAlchemy URL of an existing database.",
    ),
]


# --- one line per error ----------------------------------------------------------------------------


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _error_line(name: str, message: str) -> None:
    line = Text.assemble((name, "bold red"), ": ", _one_line(message))
    err_console.print(line)


def _connection_errors() -> tuple[type[BaseException], ...]:
    """Exception classes meaning a JSON-RPC endpoint did not answer."""
    classes: list[type[BaseException]] = []
    try:
        from requests.exceptions import ConnectionError as RequestsConnectionError
        from requests.exceptions import Timeout

        classes += [RequestsConnectionError, Timeout]
    except ImportError:  # pragma: no cover - requests comes with web3
        pass
    from web3.exceptions import ProviderConnectionError

    classes.append(ProviderConnectionError)
    return tuple(classes)


def _named(exc: BaseException) -> tuple[str, str] | None:
    """The one line (name, message) for a known error class, or None for an unexpected one."""
    from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, SQLAlchemyError

    from backend.chain.errors import ChainError
    from backend.metering.frames import FrameChainError
    from backend.metering.period import MeteredPeriodError
    from backend.metering.service import MeterServiceError
    from backend.platform import PlatformError
    from backend.settlement.job import PeriodConflictError
    from backend.settlement.period import PeriodBuildError
    from backend.settlement.tariff import TariffError

    if isinstance(exc, CliInputError | DatabaseError | SchedulerError | ChainError | PlatformError):
        return type(exc).__name__, str(exc)
    if isinstance(exc, MeteredPeriodError | FrameChainError | MeterServiceError):
        return type(exc).__name__, str(exc)
    if isinstance(exc, PeriodBuildError | TariffError | PeriodConflictError):
        return type(exc).__name__, str(exc)
    if isinstance(exc, ArgumentError):
        return "InvalidDatabaseUrlError", str(exc)
    if isinstance(exc, OperationalError):
        return "DatabaseUnreachableError", str(exc.orig if exc.orig is not None else exc)
    if isinstance(exc, IntegrityError):
        return "IntegrityError", str(exc.orig if exc.orig is not None else exc)
    if isinstance(exc, SQLAlchemyError):
        return type(exc).__name__, str(exc)
    if isinstance(exc, _connection_errors()):
        return "ChainUnreachableError", str(exc)
    if isinstance(exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        where = exc.filename if exc.filename is not None else ""
        return type(exc).__name__, f"{where}: {exc.strerror}" if where else str(exc)
    return None


@contextmanager
def _named_errors() -> Iterator[None]:
    """Every error as one line on stderr: a known (named) error exits 2, anything else 1 with
    ``InternalError`` and a hint to rerun with ``--debug``; typer's own exits pass through."""
    try:
        yield
    except (typer.Exit, typer.Abort, SystemExit, KeyboardInterrupt):
        raise
    except typer.TyperException as exc:  # usage errors: unknown or missing options, ...
        if type(exc).__name__ == "NoArgsIsHelpError":
            err_console.print(exc.format_message(), markup=False)
        else:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            _error_line(type(exc).__name__, exc.format_message() + hint)
        raise typer.Exit(code=exc.exit_code) from exc
    except Exception as exc:
        named = _named(exc)
        if named is not None:
            _error_line(*named)
            raise typer.Exit(code=2) from exc
        _error_line(
            "InternalError",
            f"{type(exc).__name__}: {_one_line(str(exc))} "
            "(a bug; rerun with v2g --debug ... for the traceback)",
        )
        raise typer.Exit(code=1) from exc


class NamedErrorGroup(TyperGroup):
    """The root command: runs everything inside :func:`_named_errors` unless ``--debug`` is given."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        if "--debug" in argv or not standalone_mode:
            return super().main(argv, prog_name, complete_var, standalone_mode, **extra)
        try:
            with _named_errors():
                result = super().main(argv, prog_name, complete_var, False, **extra)
        except typer.Exit as done:
            sys.exit(done.exit_code)
        sys.exit(result if isinstance(result, int) else 0)


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


# --- helpers shared by the commands ----------------------------------------------------------------


SETTLEMENT_STAGES = ("trades", "deploy", "build", "escrow", "settle", "audit")


@contextmanager
def _stage_progress(label: str) -> Iterator[Callable[[str], None]]:
    """A progress bar over the settlement stages; yields the callback that marks a stage done."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(label, total=len(SETTLEMENT_STAGES))

        def advance(stage: str) -> None:
            progress.update(task, advance=1, description=f"{label}: {stage} done")

        yield advance


def _day_prices(path: Path, day: str) -> pd.Series:
    """The hourly prices of ``path``; :class:`DateOutOfRangeError` unless they cover all of ``day``."""
    import pandas as pd

    series = load_prices(path).eur_mwh
    start = pd.Timestamp(day, tz="UTC")
    last_hour = start + pd.Timedelta(hours=23)
    if len(series) == 0 or start < series.index.min() or last_hour > series.index.max():
        covers = (
            f"it covers {series.index.min():%Y-%m-%d %H:%M} to {series.index.max():%Y-%m-%d %H:%M} UTC"
            if len(series)
            else "it holds no prices"
        )
        raise DateOutOfRangeError(f"--date {day}: not in the price data of {path.name} ({covers})")
    return series


def _probe_database(db: str) -> None:
    """Connect once before any work, so that an unreachable database is named first."""
    try:
        probe(db)
    except DatabaseError as exc:
        raise type(exc)(f"--db {exc}") from None


def _data_dir() -> Path:
    from backend.config import Settings

    return Path(Settings().data_dir)


@contextmanager
def _platform(db: str, spec: str | None, *, write: bool, strict: bool = True) -> Iterator[Platform]:
    """The database and the chain named by ``--db`` and ``--chain`` (default ``V2G_CHAIN``, else the
    chain the database settles on, else the embedded chain), checked against each other
    (:class:`backend.platform.ChainMismatchError` when they do not belong together). ``write=False``
    opens the embedded chain read-only, so that it can be read beside ``v2g serve``."""
    from backend.config import Settings
    from backend.platform import Platform

    settings = Settings()
    spec = spec or settings.chain
    _probe_database(db)
    try:
        platform = Platform.connect(
            db,
            spec,
            data_dir=Path(settings.data_dir),
            deployments_dir=Path(settings.deployments_dir),
            write=write,
            strict=strict,
            data_dir_explicit="data_dir" in settings.model_fields_set,
        )
    except ValueError as exc:  # a key from V2G_PRIVATE_KEYS that is not a private key
        raise InvalidSigningKeyError(
            f"V2G_PRIVATE_KEYS (for --chain {spec}): {_one_line(str(exc))}"
        ) from None
    except _connection_errors():
        raise ChainUnreachableError(f"--chain {spec}: no JSON-RPC answer") from None
    try:
        yield platform
    finally:
        platform.close()


# --- money as people read it -------------------------------------------------------------------------

UNIT = 10**TOKEN_DECIMALS
CENT = Decimal("0.01")
MONEY_NOTE = (
    f"Money in EUR (settlement token: {TOKEN_DECIMALS} decimals, 1 EUR = {UNIT:,} base units); "
    "an owner's amount > 0: the owner is paid, < 0: the owner pays."
)


def eur(base_units: int, *, signed: bool = False) -> str:
    """Token base units as EUR, exact to the token's decimals: ``+12.345678 EUR``."""
    value = Decimal(base_units).scaleb(-TOKEN_DECIMALS)
    return f"{value:{'+' if signed else ''},.{TOKEN_DECIMALS}f} EUR"


def _cents(value: float) -> Decimal:
    return Decimal(repr(float(value))).quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class StrategyRow:
    """One strategy's money as shown, each term rounded to the cent; ``net_eur`` is their sum, so a
    row adds up exactly as printed: net = import − export + wear + penalty."""

    strategy: str
    import_eur: Decimal
    export_eur: Decimal
    wear_eur: Decimal
    penalty_eur: Decimal
    v2g_value_eur: Decimal
    peak_kw: float
    short_kwh: float

    @property
    def net_eur(self) -> Decimal:
        return self.import_eur - self.export_eur + self.wear_eur + self.penalty_eur

    @classmethod
    def of(cls, strategy: str, k: Kpis) -> StrategyRow:
        return cls(
            strategy,
            _cents(k.import_cost_eur),
            _cents(k.export_revenue_eur),
            _cents(k.degradation_eur),
            _cents(k.shortfall_penalty_eur),
            _cents(k.v2g_revenue_eur),
            k.peak_import_kw,
            k.shortfall_kwh,
        )


STRATEGY_CAPTION = (
    "net = import − export + wear + penalty (EUR, each term rounded to the cent); "
    "Δ net = net − uncontrolled net; penalty: energy owners leave without, priced the same in every "
    "strategy; V2G value: discharged energy at the price it earned, already inside import and "
    "export (not added to net)"
)


def _strategy_rows(results: dict[str, Kpis]) -> list[StrategyRow]:
    return [StrategyRow.of(name, k) for name, k in results.items()]


def _strategy_table(title: str, results: dict[str, Kpis]) -> Table:
    rows = _strategy_rows(results)
    table = Table(title=title, caption=STRATEGY_CAPTION)
    table.add_column("strategy")
    for column in (
        "import €",
        "export €",
        "wear €",
        "penalty €",
        "net €",
        "Δ net €",
        "(V2G value €)",
        "peak kW",
        "short kWh",
    ):
        table.add_column(column, justify="right")
    base = next((r.net_eur for r in rows if r.strategy == "uncontrolled"), rows[0].net_eur)
    for row in rows:
        table.add_row(
            row.strategy,
            f"{row.import_eur:,.2f}",
            f"{row.export_eur:,.2f}",
            f"{row.wear_eur:,.2f}",
            f"{row.penalty_eur:,.2f}",
            f"{row.net_eur:,.2f}",
            f"{row.net_eur - base:+,.2f}",
            f"({row.v2g_value_eur:,.2f})",
            f"{row.peak_kw:,.1f}",
            f"{row.short_kwh:,.3f}",
        )
    return table


# --- commands ----------------------------------------------------------------------------------------


@app.command()
def schedule(
    date: DateOpt = "2023-07-02",
    evs: Annotated[
        int,
        typer.Option(
            parser=_integer("--evs", 1), metavar="INTEGER", help="Fleet size (generated from ElaadNL)."
        ),
    ] = 1000,
    v2g_share: Annotated[
        float,
        typer.Option(
            parser=_real("--v2g-share", 0.0, 1.0), metavar="FLOAT", help="Share of V2G-capable vehicles."
        ),
    ] = 0.3,
    seed: SeedOpt = 0,
    prices: Annotated[
        Path,
        typer.Option(parser=_input_file("--prices"), metavar="FILE", help="Hourly price CSV (utc,eur_mwh)."),
    ] = PRICES_NL,
    gap: Annotated[
        float,
        typer.Option(
            parser=_real("--gap", 0.0, 1.0, open_lo=True, open_hi=True),
            metavar="FLOAT",
            help="Relative MIP gap, 0 < gap < 1.",
        ),
    ] = 1e-4,
    plot: Annotated[
        Path | None,
        typer.Option(
            parser=_output_file("--plot", suffixes=(".png", ".svg", ".pdf")),
            metavar="FILE",
            help="Write a PNG (or .svg, .pdf) of prices, power, limits and SoC band.",
        ),
    ] = None,
    trades: Annotated[
        Path | None,
        typer.Option(
            parser=_output_file("--trades"),
            metavar="FILE",
            help="Write the V2G schedule's trades (whole Wh) as CSV.",
        ),
    ] = None,
) -> None:
    """Schedule one day for a generated fleet: uncontrolled, smart and V2G, side by side."""
    from scheduler.baselines import run_strategies
    from scheduler.fleet import FleetConfig, fleet_problem
    from scheduler.index import build_index
    from scheduler.schedule import to_trades

    series = _day_prices(prices, date)
    problem = fleet_problem(date, series, FleetConfig(n_evs=evs, v2g_share=v2g_share), seed=seed)
    with console.status(f"solving {evs} EVs × {problem.horizon.intervals} intervals ..."):
        results = run_strategies(problem, mip_gap=gap)
    console.print(
        _strategy_table(f"{evs} EVs on {date} (NL day-ahead)", {k: v[1] for k, v in results.items()})
    )
    v2g = results["v2g"][0]
    console.print(f"V2G schedule: {v2g.status}, gap {v2g.mip_gap:.2e}, solved in {v2g.solve_s:.2f} s")
    if plot is not None:
        from scheduler.plot import plot_schedule

        console.print(f"plot: {plot_schedule(v2g, build_index(problem), plot)}")
    if trades is not None:
        rows = to_trades(v2g)
        with trades.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["owner", "vehicle_id", "session_id", "interval_start", "direction", "energy_wh"])
            for t in rows:
                writer.writerow(
                    [
                        t.owner,
                        t.vehicle_id,
                        t.session_id,
                        t.interval_start.isoformat(),
                        t.direction.value,
                        t.energy_wh,
                    ]
                )
        console.print(f"trades: {len(rows)} rows → {trades}")


audit_app = typer.Typer(help="Audit: owner statements, reconciliation, inclusion proofs.")
app.add_typer(audit_app, name="audit")


@app.command()
def deploy(
    chain: ChainOpt = None,
    db: DbOpt = "sqlite:///v2g.sqlite",
    liveness: Annotated[
        int,
        typer.Option(
            parser=_integer("--liveness", 60, 30 * 24 * 3600),
            metavar="SECONDS",
            help="Challenge window of a new deployment, seconds (60 s to 30 days, as the contract allows).",
        ),
    ] = 3600,
    record: Annotated[
        Path | None,
        typer.Option(
            parser=_deployment_record("--record"),
            metavar="FILE",
            help="Also write the deployment record (JSON) to this file.",
        ),
    ] = None,
) -> None:
    """Deploy the token and the settlement contract for this database (re-running changes nothing):
    the record goes into the database and deployments/<chain id>/."""
    with _platform(db, chain, write=True) as platform:
        existed = platform.stored is not None
        platform.ensure_deployment(liveness_s=liveness)
        assert platform.stored is not None
        text = platform.stored.to_json()
    if record is not None:
        record.write_text(text)
    console.print_json(text)
    if existed:
        console.print("deployment already recorded for this database: nothing sent")


def _settle_table(result: DayResult) -> Table:
    table = Table(title=f"Settlement period {result.period_id}")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage, seconds in result.seconds.items():
        table.add_row(stage, f"{seconds:.2f}")
    return table


def _summary_lines(result: DayResult, kpis_by_strategy: dict[str, Kpis] | None = None) -> list[str]:
    """The day's summary in EUR (see :data:`MONEY_NOTE` for the units and the sign)."""
    lines = []
    if kpis_by_strategy:
        rows = {r.strategy: r for r in _strategy_rows(kpis_by_strategy)}
        v2g, base = rows["v2g"], rows["uncontrolled"]
        lines.append(
            f"V2G schedule: import {v2g.import_eur:,.2f} − export {v2g.export_eur:,.2f} + wear "
            f"{v2g.wear_eur:,.2f} + penalty {v2g.penalty_eur:,.2f} = net {v2g.net_eur:,.2f} EUR "
            f"(uncontrolled: net {base.net_eur:,.2f} EUR)"
        )
        lines.append(
            f"V2G value of the discharged energy: {v2g.v2g_value_eur:,.2f} EUR "
            "(already inside import and export, not added to net)"
        )
    lines.append(
        f"owners paid: {result.owners_paid}, owners debited: {result.owners_debited} "
        f"({result.entries} entries; paid to owners {eur(result.total_credit)}, "
        f"paid by owners {eur(result.total_debit)})"
    )
    lines.append(
        f"period {result.period_id}: {result.status}; gas "
        + ", ".join(f"{k} {v:,}" for k, v in result.gas.items())
    )
    lines.append(
        "reconciliation: "
        + ("OK" if result.reconciliation.ok else f"{len(result.reconciliation.mismatches)} mismatch(es)")
    )
    return lines


@app.command()
def settle(
    date: DateOpt = "2023-07-02",
    evs: Annotated[
        int,
        typer.Option(
            parser=_integer("--evs", 1, 20_000), metavar="INTEGER", help="Fleet size (one owner per EV)."
        ),
    ] = 200,
    seed: SeedOpt = 0,
    chain: ChainOpt = None,
    db: DbOpt = "sqlite:///v2g.sqlite",
    fee_bps: FeeOpt = 100,
    metered: Annotated[
        bool,
        typer.Option(
            "--metered",
            help="Settle the day's metered energy (from the stations' registers, signed by the metering "
            "service) instead of a simulated schedule.",
        ),
    ] = False,
) -> None:
    """Schedule one day with V2G and settle it on chain: propose, finalise, claims, audit.

    The period of a day is settled once: a day already settled sends nothing and exits 0; a settle that
    was killed resumes where it stopped (the schedule is not recomputed)."""
    from backend.db.models import PeriodStatus
    from backend.settlement.service import resume_period, settle_day
    from scheduler.fleet import FleetConfig, fleet_problem
    from scheduler.solve import solve

    series = None if metered else _day_prices(PRICES_NL, date)  # a metered day's prices are in the database
    period_id = int(date.replace("-", ""))
    with _platform(db, chain, write=True) as platform:
        # keys before any work: every role's for a first deployment, the settler's after (the metering
        # service signs, metered registers or simulated ones: this process never loads the meter key)
        platform.actors(("admin", "settler", "auditor") if platform.stored is None else ("settler",))
        existing = platform.period(period_id) if platform.stored is not None else None
        if existing is not None and existing.status in (PeriodStatus.CLAIMED, PeriodStatus.DISPUTED):
            record = platform.record
            console.print(
                f"period {period_id} is already settled ({existing.status}) on chain id {record.chain_id}, "
                f"contract {record.settlement}: nothing sent"
            )
            report = platform.reconcile()
            console.print(
                "reconciliation: " + ("OK" if report.ok else f"{len(report.mismatches)} mismatch(es)")
            )
            if not report.ok:
                raise typer.Exit(code=1)
            return
        if metered:
            from backend.audit.energy import energy_balance
            from backend.operations.run import settle_metered_day

            # V2G_SETTLE_NOW (ISO 8601): the time this settler takes as now, for drills that settle a day
            # they just operated; the day must still have ended by it
            now_text = os.environ.get("V2G_SETTLE_NOW")
            now = dt.datetime.fromisoformat(now_text) if now_text else dt.datetime.now(dt.UTC)
            metered_day, built, status = settle_metered_day(platform, period_id, fee_bps, now=now)
            report = platform.reconcile()
            with platform.sessions() as session:
                balance = energy_balance(session, period_id, ledger=metered_day.ledger)
            console.print(MONEY_NOTE, soft_wrap=True)
            console.print(
                f"period {period_id} (metered): {status}; {built.entry_count} entries, paid to owners "
                f"{eur(built.total_credit)}, paid by owners {eur(built.total_debit)}; "
                f"{len(metered_day.trades)} metered trades ({metered_day.adjusted_wh:,} Wh of earlier days "
                f"adjusted), {metered_day.unattributed_wh:,} Wh of unknown owners not billed"
            )
            console.print(
                "energy: " + balance.equation() + (" (balances)" if balance.ok else " (DOES NOT BALANCE)"),
                markup=False,
            )
            verdict = "OK" if report.ok else f"{len(report.mismatches)} mismatch(es)"
            console.print(f"reconciliation: {verdict}")
            if not report.ok or not balance.ok:
                raise typer.Exit(code=1)
            return
        # a simulated period stored unsigned (before the metering service signed simulated days) needs its
        # registers again: the schedule is recomputed, and must give the stored root
        unsigned = (
            existing is not None and existing.status == PeriodStatus.BUILT and existing.frame_heads is None
        )
        if existing is not None and not unsigned:
            console.print(
                f"period {period_id} was left at {existing.status}: resuming it (the stored period is "
                "settled as built; the schedule is not recomputed)"
            )
            with _stage_progress("resuming") as advance:
                result = resume_period(platform, period_id, progress=advance)
        else:
            assert series is not None
            problem = fleet_problem(date, series, FleetConfig(n_evs=evs), seed=seed)
            with console.status("scheduling ..."):
                schedule_ = solve(problem)
            with _stage_progress("settling") as advance:
                result = settle_day(problem, schedule_, platform, fee_bps=fee_bps, progress=advance)
    console.print(_settle_table(result))
    console.print(MONEY_NOTE, soft_wrap=True)
    for line in _summary_lines(result):
        console.print(line)
    if result.status is PeriodStatus.PROPOSED:
        console.print(
            f"period {period_id} is proposed; its challenge window is open: run the same command again "
            "after it closes to finalise and pay"
        )
    if not result.reconciliation.ok:
        for m in result.reconciliation.mismatches[:20]:
            console.print(f"[red]{m.kind}[/] period {m.period_id}: {m.detail}")
        raise typer.Exit(code=1)


ReadChainOpt = Annotated[
    str | None,
    typer.Option(
        parser=_chain("--chain"),
        metavar="CHAIN",
        help="eth-tester, anvil or a JSON-RPC URL, read only; default: the chain the database settles on.",
    ),
]


@audit_app.command("statement")
def audit_statement(
    owner: Annotated[str, typer.Option(help="Owner id, e.g. owner-00007.")],
    db: ExistingDbOpt = "sqlite:///v2g.sqlite",
    chain: ReadChainOpt = None,
) -> None:
    """An owner's statement: per period, energy, fees, amount, payment and proof (from the database,
    checked to belong to the chain)."""
    from backend.platform import UnknownOwnerError as NoOwner

    with _platform(db, chain, write=False) as platform:
        try:
            statement = platform.statement(owner)
        except NoOwner:
            statement = None
    if statement is None or not statement.lines:
        raise UnknownOwnerError(f"--owner {owner}: no periods for this owner in {db}")
    table = Table(title=f"Statement of {owner} ({statement.address})", caption=MONEY_NOTE)
    for column in (
        "period",
        "charged Wh",
        "discharged Wh",
        "p2p Wh",
        "fees",
        "amount",
        "paid",
        "debt",
        "tx",
    ):
        table.add_column(column, justify="right")
    for line in statement.lines:
        table.add_row(
            str(line.period_id),
            f"{line.charged_wh:,}",
            f"{line.discharged_wh:,}",
            f"{line.p2p_wh:,}",
            eur(line.fees),
            eur(line.amount, signed=True),
            eur(line.paid) if line.paid is not None else "-",
            eur(line.debt_added) if line.debt_added is not None else "-",
            (line.claim_tx or "-")[:12],
        )
    console.print(table)
    console.print(f"total amount: {eur(statement.total_amount, signed=True)}")


@audit_app.command("proof")
def audit_proof(
    period: Annotated[
        int, typer.Option(parser=_integer("--period", 0, UINT63), metavar="INTEGER", help="Period id.")
    ],
    entry: Annotated[
        int, typer.Option(parser=_integer("--entry", 0, UINT63), metavar="INTEGER", help="Entry id.")
    ],
    db: ExistingDbOpt = "sqlite:///v2g.sqlite",
    chain: ReadChainOpt = None,
) -> None:
    """Verify an entry's inclusion proof against the root the chain recorded and the leaf the
    contract computes."""
    from backend.platform import EntryNotFoundError as NoEntry

    with _platform(db, chain, write=False) as platform:
        try:
            result = platform.proof(period, entry)
        except NoEntry as exc:
            raise EntryNotFoundError(f"--period {period} --entry {entry}: {exc}") from None
    console.print(
        f"leaf {result.leaf}\nroot {result.root}\nproof {len(result.proof)} hashes: "
        + ("[green]valid[/]" if result.valid else "[red]INVALID[/]")
        + (
            ""
            if result.contract_leaf_matches is None
            else f"; contract leaf {'matches' if result.contract_leaf_matches else '[red]DIFFERS[/]'}"
        )
    )
    if not result.valid or result.contract_leaf_matches is False:
        raise typer.Exit(code=1)


@audit_app.command("reconcile")
def audit_reconcile(chain: ReadChainOpt = None, db: ExistingDbOpt = "sqlite:///v2g.sqlite") -> None:
    """Database vs chain, every mismatch named (the chain the database was settled on)."""
    with _platform(db, chain, write=False) as platform:
        report = platform.reconcile()
    for m in report.mismatches:
        console.print(f"[red]{m.kind}[/] period {m.period_id}: {m.detail}")
    console.print(
        f"{report.periods} periods, {report.entries} entries, {report.accounts} accounts: "
        + ("[green]OK[/]" if report.ok else f"[red]{len(report.mismatches)} mismatch(es)[/]")
    )
    if not report.ok:
        raise typer.Exit(code=1)


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


@audit_app.command("energy")
def audit_energy(
    date: DateOpt,
    db: ExistingDbOpt = "sqlite:///v2g.sqlite",
    clock_tolerance_s: AuditToleranceOpt = None,
) -> None:
    """Where every Wh the meters measured on a UTC day went: metered = settled + adjusted + refused +
    pending, each term from its own source (raw frames, the day's period, later periods, named refusals);
    exits 1 if the day does not balance (a Wh paid twice or without a meter behind it)."""
    from backend.audit.energy import energy_balance
    from backend.db.session import session_factory
    from backend.metering.replay import MeterPolicy

    day = int(date.replace("-", ""))
    with session_factory(db)() as session:
        policy = None if clock_tolerance_s is None else MeterPolicy(clock_tolerance_s=clock_tolerance_s)
        balance = energy_balance(session, day, policy)
    table = Table(title=f"Energy of {date} (UTC), whole Wh")
    table.add_column("term")
    table.add_column("Wh", justify="right")
    for term, wh in (
        ("metered (raw frames)", balance.metered_wh),
        ("settled (its own period)", balance.settled_wh),
        ("adjusted (later periods)", balance.adjusted_wh),
        ("refused", balance.refused_wh),
        *((f"  {reason}", wh) for reason, wh in balance.refused_by_reason.items()),
        ("pending (in no period yet)", balance.pending_wh),
        ("of settled + adjusted: from meters that do not sign", balance.unsigned_wh),
    ):
        table.add_row(term, f"{wh:,}")
    console.print(table)
    for r in balance.refusals[:50]:
        console.print(
            f"refused {r.reason}: station {r.station_id} transaction {r.transaction_id} at "
            f"{r.at:%Y-%m-%d %H:%M:%S} UTC, {r.wh:,} Wh ({r.detail})",
            markup=False,
        )
    for o in balance.overpaid[:50]:
        console.print(
            f"[red]OverpaidError[/] {o.session_id} {o.interval_start:%Y-%m-%d %H:%M} {o.direction}: paid "
            f"{o.paid_wh:,} Wh, metered {o.metered_wh:,} Wh"
        )
    console.print(
        balance.equation() + (": [green]balances[/]" if balance.ok else ": [red]does not balance[/]")
    )
    if not balance.ok:
        raise typer.Exit(code=1)


@audit_app.command("frames")
def audit_frames(
    period: Annotated[int, typer.Option(help="The metered period (its day, YYYYMMDD).")],
    out: Annotated[Path, typer.Option(help="The JSON file to write (frames, registry, prices, heads).")],
    db: ExistingDbOpt = "sqlite:///v2g.sqlite",
    fee_bps: AuditFeeOpt = None,
    clock_tolerance_s: AuditToleranceOpt = None,
) -> None:
    """Export what a metered period was computed from: every station's raw frames up to the period's heads
    (verified), the registry, the prices, the heads of the period signed before it and the deployment, so
    that `v2g audit recompute` (or any program) recomputes its root without this database."""
    from backend.audit.recompute import export_period
    from backend.db.session import session_factory
    from backend.metering.replay import MeterPolicy

    with session_factory(db)() as session:
        policy = None if clock_tolerance_s is None else MeterPolicy(clock_tolerance_s=clock_tolerance_s)
        count = export_period(session, period, out, fee_bps, policy)
    console.print(f"period {period}: {count:,} raw frames written to {out}")


@audit_app.command("recompute")
def audit_recompute(
    period: Annotated[int, typer.Option(help="The metered period (its day, YYYYMMDD).")],
    frames: Annotated[
        Path,
        typer.Option(parser=_input_file("--frames"), metavar="FILE", help="An export of `v2g audit frames`."),
    ],
    chain: ReadChainOpt = None,
    db: ExistingDbOpt = "sqlite:///v2g.sqlite",
) -> None:
    """Recompute a metered period's root from a raw-frame export alone (hash chains, station signatures,
    replay, tariff, Merkle tree) and compare it with the root on chain; exits 1 if they differ."""
    from backend.audit.recompute import recompute_file

    result = recompute_file(frames, period)
    with _platform(db, chain, write=False) as platform:
        on_chain = platform.period_on_chain(period)
    console.print(
        f"period {period}: {result.frames:,} frames verified; root from the frames {result.root}, "
        f"credit {eur(result.total_credit)}, debit {eur(result.total_debit)}, {result.entries} entries"
    )
    console.print(f"root on chain {on_chain}")
    if on_chain.lower() != result.root.lower():
        console.print("[red]RootMismatchError[/]: the frames do not give the root on chain")
        raise typer.Exit(code=1)
    console.print("[green]the raw frames give the root on chain[/]")


meter_app = typer.Typer(help="The metering service: its own process and key; it signs metered periods.")
app.add_typer(meter_app, name="meter")


@meter_app.command("serve")
def meter_serve(
    db: ExistingDbOpt = "sqlite:///v2g.sqlite",
    port: Annotated[
        int, typer.Option(parser=_integer("--port", 0, 65535), metavar="PORT", help="0: any free port.")
    ] = 8700,
    fee_bps: FeeOpt = 100,
    clock_tolerance_s: ClockToleranceOpt = 900.0,
) -> None:
    """Run the metering service until stopped (settlers reach it at V2G_METER_URL). Its key:
    V2G_METER_KEY or V2G_METER_KEYSTORE + V2G_KEYSTORE_PASSWORD, in this process only; on a local chain
    without one, the chain's dev meter key."""
    from backend.metering.replay import MeterPolicy
    from backend.metering.service import serve

    serve(db, port, fee_bps, MeterPolicy(clock_tolerance_s=clock_tolerance_s))


@meter_app.command("role")
def meter_role(
    db: ExistingDbOpt = "sqlite:///v2g.sqlite",
    role: Annotated[
        str, typer.Option(help="The PostgreSQL role the metering service connects as.")
    ] = "v2g_meter",
) -> None:
    """Create (or reset) the metering service's own PostgreSQL role: it reads the raw frames and the
    registry and inserts its record of what it signed, nothing else. The password: V2G_METER_DB_PASSWORD,
    or a new random one printed once. Start the service with `v2g meter serve --db <that role's URL>`."""
    import secrets

    from sqlalchemy.engine import make_url

    from backend.db.roles import RoleError, grant_meter_role
    from backend.db.session import make_engine

    password = os.environ.get("V2G_METER_DB_PASSWORD") or secrets.token_urlsafe(24)
    engine = make_engine(db)
    try:
        with engine.begin() as connection:
            grant_meter_role(connection, role, password)
    except RoleError as exc:
        raise UsageError(f"--role {role}: {exc}") from None
    finally:
        engine.dispose()
    url = make_url(db).set(username=role, password="PASSWORD")
    console.print(f"role {role} can read field data and insert meter signatures; its URL:", markup=False)
    console.print(url.render_as_string(hide_password=False), markup=False)
    if not os.environ.get("V2G_METER_DB_PASSWORD"):
        console.print(f"PASSWORD = {password} (shown once)", markup=False)


chain_app = typer.Typer(help="The local chains: the embedded chain's file and the managed anvil node.")
app.add_typer(chain_app, name="chain")


@chain_app.command("start")
def chain_start() -> None:
    """Start the managed anvil node in the background (state in <data dir>/chains/anvil); commands with
    --chain anvil and `v2g serve` with V2G_CHAIN=anvil use it until `v2g chain stop`."""
    from backend.chain.node import AnvilNode

    node = AnvilNode(_data_dir())
    running = node.info()
    info = node.start()
    word = "already running" if running is not None else "started"
    console.print(f"anvil {word}: pid {info.pid}, {info.url}, state {info.state}")


@chain_app.command("stop")
def chain_stop() -> None:
    """Stop the managed anvil node (it writes its state first)."""
    from backend.chain.node import AnvilNode

    info = AnvilNode(_data_dir()).stop()
    console.print(
        "no managed anvil is running"
        if info is None
        else f"anvil stopped (pid {info.pid}); state {info.state}"
    )


@chain_app.command("status")
def chain_status() -> None:
    """Where the local chains are: the embedded chain's file and head, the managed anvil node."""
    from backend.chain.client import Chain
    from backend.chain.embedded import ChainFileError
    from backend.chain.node import EMBEDDED_FILE, AnvilNode

    data = _data_dir()
    path = data / EMBEDDED_FILE
    if path.exists():
        try:
            with Chain.eth_tester(path, readonly=True) as embedded:
                head = embedded.w3.eth.get_block("latest")
            console.print(
                f"eth-tester: {path}, block {head['number']}, "
                f"{dt.datetime.fromtimestamp(int(head['timestamp']), dt.UTC):%Y-%m-%d %H:%M:%S} UTC"
            )
        except ChainFileError as exc:
            console.print(f"eth-tester: {exc}")
    else:
        console.print(f"eth-tester: no chain yet ({path} is made by the first command that sends)")
    info = AnvilNode(data).info()
    console.print("anvil: not running" if info is None else f"anvil: running, pid {info.pid}, {info.url}")


ID_RE = r"[A-Za-z0-9._:-]{1,64}"


def _csv_rows(file: Path, columns: list[str], error: type[CliInputError]) -> list[tuple[int, dict[str, str]]]:
    """A CSV's rows (values stripped) with their line numbers; ``error`` names what is wrong."""
    try:
        with file.open(newline="", encoding="utf-8-sig") as handle:  # a spreadsheet's byte-order mark
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or not set(columns) <= set(reader.fieldnames):
                raise error(f"{file}: needs the columns {','.join(columns)}")
            return [
                (line, {k: (v or "").strip() for k, v in row.items() if k})
                for line, row in enumerate(reader, start=2)
            ]
    except UnicodeDecodeError:
        raise error(f"{file}: not a text CSV file") from None


owners_app = typer.Typer(help="The owner registry: owner ids and their payout addresses.")
app.add_typer(owners_app, name="owners")


@owners_app.command("import")
def owners_import(
    file: Annotated[
        Path,
        typer.Argument(parser=_input_file("FILE"), metavar="FILE", help="CSV with columns owner_id,address."),
    ],
    db: DbOpt = "sqlite:///v2g.sqlite",
) -> None:
    """Register owners and their addresses (a chain other than a local one settles only registered
    owners). Re-importing the same rows changes nothing; an owner registered with another address, a
    malformed address or id refuses the whole file."""
    from backend.db.models import Owner
    from backend.db.session import session_factory
    from backend.owners import system_addresses

    _probe_database(db)
    sessions = session_factory(db)
    added = 0
    with sessions.begin() as session:
        rows = _owner_rows(file, system_addresses(session))
        known = {o.id: o.address for o in session.scalars(select(Owner))}
        taken = {a: o for o, a in known.items()}
        for owner_id, address in rows:
            if owner_id in known:
                if known[owner_id] != address:
                    raise InvalidOwnerFileError(
                        f"{file}: owner {owner_id} is registered with {known[owner_id]}, not {address}"
                    )
                continue
            if address in taken:
                raise InvalidOwnerFileError(f"{file}: address {address} belongs to owner {taken[address]}")
            session.add(Owner(id=owner_id, address=address))
            known[owner_id], taken[address] = address, owner_id
            added += 1
    console.print(f"{added} owner(s) registered, {len(rows) - added} already known")


def _owner_rows(file: Path, system: set[str]) -> list[tuple[str, str]]:
    """The file's (owner id, checksummed address) rows, each address by the one rule of
    :mod:`backend.owners` (EIP-55, not zero, not the deployment's own accounts or contracts)."""
    import re

    from backend.owners import OwnerAddressError, payout_address

    rows: list[tuple[str, str]] = []
    for line, row in _csv_rows(file, ["owner_id", "address"], InvalidOwnerFileError):
        owner_id, address = row["owner_id"], row["address"]
        if not re.fullmatch(ID_RE, owner_id):
            raise InvalidOwnerFileError(f"{file} line {line}: owner id {owner_id!r} is not an id")
        try:
            rows.append((owner_id, payout_address(address, system)))
        except OwnerAddressError as exc:
            raise InvalidOwnerFileError(f"{file} line {line}: {type(exc).__name__}: {exc}") from None
    if len({o for o, _ in rows}) != len(rows):
        raise InvalidOwnerFileError(f"{file}: an owner id appears twice")
    return rows


stations_app = typer.Typer(
    help="The charging stations the CSMS accepts, and the idTokens that start a charge."
)
app.add_typer(stations_app, name="stations")


@stations_app.command("import")
def stations_import(
    file: Annotated[
        Path,
        typer.Argument(
            parser=_input_file("FILE"),
            metavar="FILE",
            help="CSV: station_id,ocpp_version (2.1|2.0.1),can_discharge (true|false),evses,"
            "periods_per_schedule[,meter_public_key (hex, 64 bytes)]"
            "[,max_power_kw (kW per EVSE, default 22; or one per EVSE: 11;22)]"
            "[,password (16-40 characters, stored hashed; empty: keep the current one)].",
        ),
    ],
    db: DbOpt = "sqlite:///v2g.sqlite",
) -> None:
    """Register charging stations (an unknown station is refused at connection). Re-importing a station
    updates it; a malformed row refuses the whole file. A station connects with HTTP Basic (user: its
    id, its password); the file's passwords are stored only as scrypt hashes (v2g stations password
    makes one)."""
    import re

    from backend.db.models import Station
    from backend.operations.auth import WeakPasswordError, check_password, hash_password

    parsed = []
    columns = ["station_id", "ocpp_version", "can_discharge", "evses", "periods_per_schedule"]
    for line, row in _csv_rows(file, columns, InvalidRegistryFileError):
        where = f"{file} line {line}"
        if not re.fullmatch(ID_RE, row["station_id"]):
            raise InvalidRegistryFileError(f"{where}: station id {row['station_id']!r} is not an id")
        if row["ocpp_version"] not in ("2.1", "2.0.1"):
            raise InvalidRegistryFileError(f"{where}: ocpp_version {row['ocpp_version']!r} (2.1 or 2.0.1)")
        if row["can_discharge"].lower() not in ("true", "false"):
            raise InvalidRegistryFileError(f"{where}: can_discharge {row['can_discharge']!r} (true or false)")
        try:
            evses, periods = int(row["evses"]), int(row["periods_per_schedule"])
        except ValueError:
            raise InvalidRegistryFileError(
                f"{where}: evses and periods_per_schedule are whole numbers"
            ) from None
        if not (1 <= evses <= 64 and 1 <= periods <= 1024):
            raise InvalidRegistryFileError(f"{where}: evses 1-64, periods_per_schedule 1-1024")
        key = row.get("meter_public_key") or None
        if key is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]{128}", key):
            raise InvalidRegistryFileError(f"{where}: meter_public_key must be 64 bytes of hex")
        can_discharge = row["can_discharge"].lower() == "true"
        if can_discharge and row["ocpp_version"] != "2.1":
            raise InvalidRegistryFileError(f"{where}: only an OCPP 2.1 station can discharge (V2G setpoints)")
        power_text = row.get("max_power_kw") or ""
        power: list[float] | None = None
        if power_text:
            power = []
            for part in power_text.split(";"):
                try:
                    value = float(part)
                except ValueError:
                    value = math.nan
                if not (math.isfinite(value) and 0 < value <= 1000):
                    raise InvalidRegistryFileError(
                        f"{where}: max_power_kw {power_text!r} (kW per EVSE, more than 0 and at most 1000; "
                        "one for all EVSEs, or one per EVSE separated by ;)"
                    )
                power.append(value)
            if len(power) not in (1, evses):
                raise InvalidRegistryFileError(
                    f"{where}: max_power_kw {power_text!r} gives {len(power)} ratings for {evses} EVSEs"
                )
        password = row.get("password") or None
        if password is not None:
            try:
                check_password(password)
            except WeakPasswordError as exc:
                raise InvalidRegistryFileError(f"{where}: {exc}") from None
        parsed.append(
            (
                row["station_id"],
                row["ocpp_version"],
                can_discharge,
                evses,
                periods,
                key and key.removeprefix("0x"),
                power,
                password,
            )
        )
    if len({p[0] for p in parsed}) != len(parsed):
        raise InvalidRegistryFileError(f"{file}: a station id appears twice")
    _probe_database(db)
    from concurrent.futures import ThreadPoolExecutor

    from backend.db.session import session_factory

    # scrypt (~40 ms a password) releases the GIL: hashed on every core, before the transaction
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        hashes = list(pool.map(lambda p: None if p[7] is None else hash_password(p[7]), parsed))
    unset = []
    with session_factory(db).begin() as session:
        for (station_id, version, can_discharge, evses, periods, key, power, _), hashed in zip(
            parsed, hashes, strict=True
        ):
            station = session.get(Station, station_id) or Station(id=station_id, boots=0, max_power_kw=22.0)
            station.ocpp_version, station.can_discharge, station.evses = version, can_discharge, evses
            station.periods_per_schedule, station.meter_public_key = periods, key
            if power is not None:  # one rating for every EVSE, or one each
                station.max_power_kw = max(power)
                station.evse_max_kw = power if len(power) > 1 else None
            if hashed is not None:
                station.password_hash = hashed
            if station.password_hash is None:
                unset.append(station_id)
            session.add(station)
    console.print(f"{len(parsed)} station(s) registered")
    if unset:
        shown = ", ".join(unset[:5]) + (f" and {len(unset) - 5} more" if len(unset) > 5 else "")
        console.print(
            f"{len(unset)} station(s) without a password, refused at connection ({shown}): "
            "`v2g stations password ID` sets one"
        )


@stations_app.command("password")
def stations_password(
    station_id: Annotated[str, typer.Argument(metavar="STATION_ID", help="The station's id.")],
    db: DbOpt = "sqlite:///v2g.sqlite",
) -> None:
    """Give a station a new random password (its HTTP Basic password, OCPP security profiles 1 and 2)
    and print it once; only its scrypt hash is stored. The old password is refused from now on."""
    from backend.db.models import Station
    from backend.db.session import session_factory
    from backend.operations.auth import hash_password, new_password

    _probe_database(db)
    password = new_password()
    hashed = hash_password(password)
    with session_factory(db).begin() as session:
        station = session.get(Station, station_id)
        if station is None:
            raise UnknownStationError(f"STATION_ID {station_id}: no such station in {db}")
        station.password_hash = hashed
    console.print(password, markup=False, highlight=False)


@stations_app.command("tokens")
def stations_tokens(
    file: Annotated[
        Path,
        typer.Argument(parser=_input_file("FILE"), metavar="FILE", help="CSV: token,vehicle_id."),
    ],
    db: DbOpt = "sqlite:///v2g.sqlite",
) -> None:
    """Register idTokens (RFID cards, apps, contracts) and the vehicle each authorises."""
    import re

    from backend.db.models import IdTokenRow, Vehicle
    from backend.db.session import session_factory

    rows = _csv_rows(file, ["token", "vehicle_id"], InvalidRegistryFileError)
    for line, row in rows:
        if not re.fullmatch(ID_RE, row["token"]) or not re.fullmatch(ID_RE, row["vehicle_id"]):
            raise InvalidRegistryFileError(f"{file} line {line}: token and vehicle_id must be ids")
    if len({r["token"] for _, r in rows}) != len(rows):
        raise InvalidRegistryFileError(f"{file}: a token appears twice")
    _probe_database(db)
    with session_factory(db).begin() as session:
        for line, row in rows:
            if session.get(Vehicle, row["vehicle_id"]) is None:
                raise InvalidRegistryFileError(
                    f"{file} line {line}: no vehicle {row['vehicle_id']} (POST /vehicles)"
                )
            token = session.get(IdTokenRow, row["token"]) or IdTokenRow(token=row["token"])
            token.vehicle_id = row["vehicle_id"]
            session.add(token)
    console.print(f"{len(rows)} idToken(s) registered")


keys_app = typer.Typer(help="API keys (stored hashed; each key is shown once).")
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def keys_create(
    role: Annotated[
        str, typer.Option(parser=_role("--role"), metavar="ROLE", help="operator, owner or auditor.")
    ],
    owner: Annotated[str | None, typer.Option(help="The owner id (owner keys only).")] = None,
    label: Annotated[str, typer.Option(help="A note to recognise the key by.")] = "",
    db: DbOpt = "sqlite:///v2g.sqlite",
) -> None:
    """Create an API key and print it once."""
    from backend.api.security import Role, create_api_key
    from backend.db.models import Owner
    from backend.db.session import session_factory

    parsed = Role(role)
    if (parsed is Role.OWNER) != (owner is not None):
        raise InvalidKeyError(f"--role {role}: owner keys name their owner (--owner); other keys name none")
    _probe_database(db)
    sessions = session_factory(db)
    with sessions.begin() as session:
        if owner is not None and session.get(Owner, owner) is None:
            raise UnknownOwnerError(f"--owner {owner}: no such owner in {db}")
        key = create_api_key(session, parsed, owner_id=owner, label=label)
    console.print(key)


def _check_bindable(host: str, port: int) -> None:
    """Bind ``host:port`` once (as the server will, with SO_REUSEADDR) so that an unknown host or a port
    in use is named before the server starts."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise AddressUnavailableError(f"--host {host}: cannot be resolved ({exc})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise AddressUnavailableError(f"--host {host} --port {port}: {exc.strerror}") from None


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(parser=_integer("--port", 1, 65_535), metavar="INTEGER", help="Port.")
    ] = 8000,
    chain: Annotated[
        str | None,
        typer.Option(
            parser=_chain("--chain"), metavar="CHAIN", help="Overrides V2G_CHAIN (default eth-tester)."
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(parser=_database("--db"), metavar="URL", help="Overrides V2G_DATABASE_URL."),
    ] = None,
) -> None:
    """Run the HTTP API on the platform's database and chain (other settings from V2G_* environment
    variables, see backend/config.py). On the embedded chain the server is its writer: commands beside
    it read (audit) or go through the API."""
    import uvicorn

    from backend.config import Settings

    _check_bindable(host, port)
    overrides: dict[str, Any] = {}
    if chain is not None:
        overrides["chain"] = chain
    if db is not None:
        overrides["database_url"] = db
    settings = Settings(**overrides)
    _probe_database(settings.database_url)
    # open the platform once here, so that a chain held by another writer or not answering is named in
    # one line before the server starts (a chain that does not match the database starts it degraded)
    with _platform(settings.database_url, settings.chain, write=True, strict=False):
        pass

    from backend.api.app import create_app

    uvicorn.run(create_app(settings), host=host, port=port)


def _tls_context(cert: Path | None, key: Path | None, simulate: int) -> SSLContext | None:
    """The CSMS's server TLS context (OCPP security profile 2: TLS 1.2 or later), or ``None``;
    :class:`InvalidTlsError` for a certificate and key that do not load or belong together."""
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise InvalidTlsError("--tls-cert and --tls-key: give both or neither")
    if simulate:
        raise InvalidTlsError("--tls-cert/--tls-key: for live operation (the simulated stations use ws://)")
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        # a password callback that gives none: an encrypted key is refused instead of prompted for
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        raise InvalidTlsError(
            f"--tls-cert {cert} --tls-key {key}: not a PEM certificate chain and its unencrypted key "
            f"({exc.reason or exc})"
        ) from None
    return context


@app.command()
def operate(
    simulate: Annotated[
        int,
        typer.Option(
            parser=_integer("--simulate", 0, 5_000),
            metavar="N",
            help="Also run N simulated stations over an accelerated day, then settle it metered (0: none).",
        ),
    ] = 0,
    date: DateOpt = "2023-07-02",
    minutes: Annotated[
        float,
        typer.Option(
            parser=_real("--minutes", 0.2, 24 * 60.0),
            metavar="MINUTES",
            help="Real minutes a simulated day takes.",
        ),
    ] = 3.0,
    seed: SeedOpt = 0,
    chain: ChainOpt = None,
    db: DbOpt = "sqlite:///v2g.sqlite",
    fee_bps: FeeOpt = 100,
    calm: Annotated[
        bool, typer.Option("--calm", help="Simulated stations without trouble (no drops, skew, late cars).")
    ] = False,
    host: Annotated[str, typer.Option(help="Interface for the CSMS and the API (live mode).")] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(parser=_integer("--port", 1, 65_535), metavar="INTEGER", help="CSMS websocket port."),
    ] = 9000,
    api_port: Annotated[
        int, typer.Option(parser=_integer("--api-port", 1, 65_535), metavar="INTEGER", help="API port.")
    ] = 8000,
    import_limit_kw: Annotated[
        float,
        typer.Option(
            parser=_real("--import-limit-kw", 0.0, 1e6), metavar="KW", help="Site import limit (live)."
        ),
    ] = 500.0,
    export_limit_kw: Annotated[
        float,
        typer.Option(
            parser=_real("--export-limit-kw", 0.0, 1e6), metavar="KW", help="Site export limit (live)."
        ),
    ] = 500.0,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            parser=_input_file("--tls-cert"),
            metavar="FILE",
            help="The CSMS's TLS certificate chain (PEM): stations connect to wss:// (live; with --tls-key).",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            parser=_input_file("--tls-key"),
            metavar="FILE",
            help="The private key (PEM, unencrypted) of --tls-cert.",
        ),
    ] = None,
) -> None:
    """Live operations: the CSMS (OCPP 2.0.1/2.1), the re-planning loop and the metering service (its own
    process and key) on the platform's chain and database. With --simulate N: N simulated stations run
    an accelerated day that ends in a metered settlement on chain and a reconciliation. Stations prove
    who they are with HTTP Basic (security profile 1); with --tls-cert and --tls-key, over TLS (2)."""
    import asyncio

    from backend.operations.run import operate_simulated_day

    tls = _tls_context(tls_cert, tls_key, simulate)
    if simulate == 0:
        from backend.config import Settings
        from backend.operations.run import operate_live

        _check_bindable(host, port)
        _check_bindable(host, api_port)
        with _platform(db, chain, write=True) as platform:
            platform.ensure_deployment()
            settings = Settings(database_url=db, chain=chain)
            asyncio.run(
                operate_live(
                    platform,
                    settings,
                    host=host,
                    port=port,
                    api_port=api_port,
                    import_limit_kw=import_limit_kw,
                    export_limit_kw=export_limit_kw,
                    progress=lambda line: console.print(line),
                    ssl=tls,
                )
            )
        return
    with _platform(db, chain, write=True) as platform:
        result = asyncio.run(
            operate_simulated_day(
                platform,
                day=date,
                stations=simulate,
                seed=seed,
                minutes=minutes,
                fee_bps=fee_bps,
                trouble=not calm,
                progress=lambda line: console.print(line),
            )
        )
    table = Table(title=f"Operated day {date}: metered settlement, period {result.period_id}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in (
        ("stations", f"{result.stations:,}"),
        ("transactions", f"{result.transactions:,}"),
        ("meter readings stored", f"{result.meter_readings:,}"),
        ("re-plans", f"{result.replans:,}"),
        ("profiles sent", f"{result.profiles_sent:,} ({result.profiles_rejected} rejected)"),
        ("metered net energy", f"{result.metered_wh:,} Wh"),
        ("planned net energy", f"{result.planned_wh:,} Wh"),
        ("plan vs metered, Σ|deviation|", f"{result.abs_deviation_wh:,} Wh"),
        ("energy of unknown owners (not billed)", f"{result.unattributed_wh:,} Wh"),
        ("sessions refused: NoCredit (free escrow below the session's exposure)", f"{result.no_credit:,}"),
        ("period", f"{result.status}, {result.entries} entries"),
    ):
        table.add_row(name, value)
    console.print(table)
    refused = ", ".join(f"{k} {v}" for k, v in sorted(result.rejections.items())) or "none"
    console.print(f"field data refused or flagged: {refused}")
    for line in result.mismatches[:20]:
        console.print(f"[red]{line}[/]")
    console.print(
        "energy: "
        + result.energy_equation
        + (" (balances)" if result.energy_balances else " (DOES NOT BALANCE)"),
        markup=False,
    )
    console.print(
        "reconciliation: " + ("OK" if result.reconciliation_ok else f"{len(result.mismatches)} mismatch(es)")
    )
    if not result.reconciliation_ok or not result.energy_balances:
        raise typer.Exit(code=1)


@app.command(
    "case-study",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
)
def case_study(ctx: typer.Context) -> None:
    """The four-strategy case study over days of real prices on Dask (options: --help). Bad options
    are named errors of the scheduler (its parser raises them); exits 1 when a day failed after every
    solver recovery, once all the other days are done and written."""
    from scheduler.case_study import run_from_args

    with console.status("running the case study on Dask ..."):
        run = run_from_args(list(ctx.args))
    for line in run.lines:
        console.print(line)
    if run.failed:
        raise typer.Exit(code=1)


@app.command()
def demo(
    date: DateOpt = "2023-09-11",
    evs: Annotated[
        int,
        typer.Option(
            parser=_integer("--evs", 1, 5_000), metavar="INTEGER", help="Fleet size (one owner per EV)."
        ),
    ] = 200,
    seed: SeedOpt = 0,
    db: DbOpt = "sqlite:///demo.sqlite",
) -> None:
    """The main job end to end on the embedded chain and SQLite: real prices, a generated fleet,
    uncontrolled / smart / V2G schedules, trades, deployment, escrow, settlement, claims, statements and
    a reconciliation."""
    from backend.audit.statements import owner_statement
    from backend.db.session import session_factory
    from backend.platform import Platform
    from backend.settlement.service import settle_day
    from scheduler.baselines import run_strategies
    from scheduler.fleet import FleetConfig, fleet_problem

    series = _day_prices(PRICES_NL, date)
    if db == "sqlite:///demo.sqlite":
        Path("demo.sqlite").unlink(missing_ok=True)
    _probe_database(db)
    problem = fleet_problem(date, series, FleetConfig(n_evs=evs), seed=seed)
    day = problem.prices.buy_eur_mwh
    console.print(
        f"[bold]NL day-ahead {date}[/]: min {day.min():.2f}, mean {day.mean():.2f}, "
        f"max {day.max():.2f} EUR/MWh; {evs} EVs from ElaadNL, "
        f"{sum(v.v2g for v in problem.vehicles)} V2G-capable"
    )
    with console.status("scheduling uncontrolled, smart and V2G ..."):
        results = run_strategies(problem)
    kpis_by = {k: v[1] for k, v in results.items()}
    console.print(_strategy_table("Day result", kpis_by))
    # the demo's own embedded chain, beside the default one: fresh with the fresh demo database, and
    # kept afterwards, so that `v2g audit ... --db sqlite:///demo.sqlite` finds it and checks against it
    demo_data = _data_dir() / "demo"
    if db == "sqlite:///demo.sqlite":
        shutil.rmtree(demo_data / "chains", ignore_errors=True)
    with (
        Platform.open(db, "eth-tester", data_dir=demo_data) as platform,
        _stage_progress("settling on the embedded chain") as advance,
    ):
        result = settle_day(problem, results["v2g"][0], platform, fee_bps=100, progress=advance)
    console.print(_settle_table(result))
    console.print(MONEY_NOTE, soft_wrap=True)
    sessions = session_factory(db, upgrade=False)
    with sessions() as session:
        owners = sorted(result.owner_addresses)[:3]
        for owner in owners:
            statement = owner_statement(session, result.record.settlement, owner)
            for line in statement.lines:
                paid = eur(line.paid) if line.paid is not None else "-"
                debt = eur(line.debt_added) if line.debt_added is not None else "-"
                console.print(
                    f"statement {owner}: {line.charged_wh:,} Wh charged, {line.discharged_wh:,} Wh "
                    f"discharged: amount {eur(line.amount, signed=True)} (paid {paid}, debt {debt}), "
                    f"tx {str(line.claim_tx)[:12]}",
                    soft_wrap=True,
                )
    console.rule("Summary")
    for text in _summary_lines(result, kpis_by):
        console.print(text)
    if not result.reconciliation.ok:
        raise typer.Exit(code=1)


portfolio_app = typer.Typer(
    help="Portfolio scale: sites under grid zones, generated or read from files, scheduled on Dask."
)
app.add_typer(portfolio_app, name="portfolio")


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


@portfolio_app.command("generate")
def portfolio_generate(
    out: Annotated[
        Path,
        typer.Argument(parser=_directory("DIR", create=True), metavar="DIR", help="Directory to write."),
    ],
    evs: Annotated[int, typer.Option(parser=_integer("--evs", 1, 10_000_000), metavar="N")] = 10_000,
    date: DateOpt = "2023-03-15",
    seed: SeedOpt = 0,
    cap_share: Annotated[
        float | None,
        typer.Option(
            parser=_real("--cap-share", 0.0, 1.0, open_lo=True),
            metavar="SHARE",
            help="A portfolio import cap as a share of all charger power (default: none).",
        ),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
) -> None:
    """Draw a portfolio of N EVs (homes, depots, public sites under feeders and zones, DR events) from the
    ElaadNL data and write it as files that `v2g portfolio schedule` reads."""
    from scheduler.portfolio import PortfolioConfig, generate_portfolio, write_portfolio

    if fmt not in ("parquet", "csv"):
        raise CliInputError(f"--format {fmt}: not parquet or csv")
    day = dt.date.fromisoformat(date)
    prices = load_prices().window(day.isoformat(), (day + dt.timedelta(days=2)).isoformat())
    portfolio = generate_portfolio(
        date, prices, PortfolioConfig(n_evs=evs, portfolio_cap_share=cap_share), seed=seed
    )
    write_portfolio(portfolio, out, fmt=fmt)
    console.print(
        f"{portfolio.n_evs:,} EVs on {len(portfolio.sites):,} sites, {len(portfolio.nodes):,} grid nodes, "
        f"{len(portfolio.dr_events)} DR event(s) for {date}: written to {out}"
    )


@portfolio_app.command("schedule")
def portfolio_schedule(
    directory: Annotated[
        Path,
        typer.Argument(
            parser=_directory("DIR"), metavar="DIR", help="A portfolio's files (v2g portfolio generate)."
        ),
    ],
    workers: Annotated[int, typer.Option(parser=_integer("--workers", 1, 256), metavar="N")] = 2,
    scheduler_address: Annotated[
        str | None,
        typer.Option("--scheduler", metavar="ADDRESS", help="A Dask scheduler (default: a local cluster)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            parser=_output_file("--out", suffixes=(".parquet", ".csv")),
            metavar="FILE",
            help="Write the schedule (session, utc, charge_kw, discharge_kw) as .parquet or .csv.",
        ),
    ] = None,
    tol: Annotated[
        float,
        typer.Option(parser=_real("--tol", 0.0, 0.1, open_lo=True), help="Stop at this gap to the bound."),
    ] = 1e-4,
    monolithic: Annotated[
        bool, typer.Option(help="Solve as one LP (the reference; small portfolios).")
    ] = False,
) -> None:
    """Schedule a portfolio: blocks of sites in parallel on Dask, shared limits coordinated, every limit
    checked by an independent physics check; the gap to a proven lower bound is reported."""
    import numpy as np

    from scheduler.portfolio import read_portfolio, solve_portfolio
    from scheduler.portfolio.check import check_schedule

    portfolio = read_portfolio(directory)
    # the local cluster's own lifecycle (workers started, stopped at the end) is not the run's news
    import distributed  # noqa: F401  (registers its loggers, with their own levels)

    for name in [n for n in logging.root.manager.loggerDict if n.split(".")[0] == "distributed"]:
        logging.getLogger(name).setLevel(logging.ERROR)

    def progress(message: str) -> None:
        console.print(f"[dim]{message}[/dim]", highlight=False)

    result = solve_portfolio(
        portfolio,
        workers=workers,
        scheduler=scheduler_address,
        tol=tol,
        monolithic=monolithic,
        progress=progress,
    )
    schedule = result.schedule
    violations = check_schedule(
        portfolio,
        np.concatenate([b.session_row for b in schedule]) if schedule else np.zeros(0, np.int64),
        np.concatenate([b.t for b in schedule]) if schedule else np.zeros(0, np.int64),
        np.concatenate([b.charge_kw for b in schedule]) if schedule else np.zeros(0),
        np.concatenate([b.discharge_kw for b in schedule]) if schedule else np.zeros(0),
        tol=1e-3,
    )
    table = Table(title=f"Portfolio {portfolio.horizon.start:%Y-%m-%d}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    figures = result.figures()
    for key in (
        "evs",
        "sites",
        "zones",
        "blocks",
        "coupled_blocks",
        "coupling_rows",
        "coordination_iterations",
    ):
        table.add_row(key, f"{figures[key]:,}")
    table.add_row("cost (EUR)", f"{result.cost_eur:,.2f}")
    table.add_row("lower bound (EUR)", f"{result.lower_bound_eur:,.2f}")
    table.add_row("gap to bound", f"{result.gap:.2e}")
    table.add_row("solve / total (s)", f"{result.solve_s:.1f} / {result.total_s:.1f}")
    table.add_row(
        "physics check", "every limit holds" if not violations else f"{len(violations)} violation(s)"
    )
    console.print(table)
    if out is not None:
        frame = result.schedule_frame(portfolio)
        if out.suffix == ".csv":
            frame.to_csv(out, index=False)
        else:
            frame.to_parquet(out, index=False)
        console.print(f"schedule: {len(frame):,} rows written to {out}")
    if violations:
        for v in violations[:10]:
            err_console.print(f"PhysicsCheckError: {v}")
        raise typer.Exit(code=1)


if __name__ == "__main__":
    app()
