"""The errors the command line names itself, and the one line every error becomes.

Bad input gets one line ``ErrorName: what and where`` on stderr and exit code 2, never a traceback;
anything unexpected is one ``InternalError`` line and exit code 1 (``v2g --debug ...`` shows the
traceback)."""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import typer
from rich.text import Text
from typer.core import TyperGroup

from backend.cli.output import err_console
from backend.db.session import DatabaseError
from scheduler.errors import SchedulerError

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


class InvalidSettingError(CliInputError):
    """A V2G_* variable (or .env line) that is not a valid setting."""


class UsageError(CliInputError):
    """A forwarded command's own argument parser refused the arguments."""


class InvalidUrlError(CliInputError):
    """A URL option that is not an http(s) URL, or one given where it does not apply."""


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
    from backend.config import ConfigFileError
    from backend.metering.frames import FrameChainError
    from backend.metering.period import MeteredPeriodError
    from backend.metering.service import MeterServiceError
    from backend.platform import PlatformError
    from backend.settlement.job import PeriodConflictError
    from backend.settlement.period import PeriodBuildError
    from backend.settlement.tariff import TariffError

    if isinstance(exc, ConfigFileError):  # the configuration file, read wherever a door reads settings
        return "InvalidSettingError", str(exc)
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


class CsmsWorkersError(CliInputError):
    """``--csms-workers`` where it cannot run: a simulated day, or a database that is not PostgreSQL."""
