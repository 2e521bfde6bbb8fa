"""What the commands share: the settings, the platform a command opens, its settlement policy, and
the checks made before any work (prices of a day, a database that answers, a free port, TLS files)."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from backend.cli.errors import (
    AddressUnavailableError,
    ChainUnreachableError,
    CliInputError,
    DateOutOfRangeError,
    InvalidSettingError,
    InvalidSigningKeyError,
    InvalidTlsError,
    _connection_errors,
    _one_line,
)
from backend.db.session import DatabaseError, probe
from scheduler.datasets import load_prices

if TYPE_CHECKING:
    from ssl import SSLContext

    import pandas as pd

    from backend.app.settle import SettlePolicy
    from backend.config import Settings
    from backend.platform import Platform


def _settings() -> Settings:
    """The settings of every command (``V2G_*`` variables, ``.env``, the configuration file); an invalid
    value is named."""
    from pydantic import ValidationError

    from backend.config import ConfigFileError, Settings, config_file, unknown_variables

    unknown = unknown_variables()
    if unknown:
        name, close = unknown[0]
        hint = f" (did you mean {close}?)" if close else " (see examples/v2g.toml for the settings)"
        raise InvalidSettingError(f"{name}: not a setting{hint}")
    try:
        return Settings()
    except ConfigFileError as exc:
        raise InvalidSettingError(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "_".join(str(p) for p in first["loc"])
        where = f" (or {field} in {config_file()})" if config_file() is not None else ""
        raise InvalidSettingError(f"V2G_{field.upper()}{where}: {first['msg']}") from None


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
    return Path(_settings().data_dir)


@contextmanager
def _platform(db: str, spec: str | None, *, write: bool, strict: bool = True) -> Iterator[Platform]:
    """The database and the chain named by ``--db`` and ``--chain`` (default ``V2G_CHAIN``, else the
    chain the database settles on, else the embedded chain), checked against each other
    (:class:`backend.platform.ChainMismatchError` when they do not belong together). ``write=False``
    opens the embedded chain read-only, so that it can be read beside ``v2g serve``."""
    from backend.app.settle import open_platform

    settings = _settings()
    spec = spec or settings.chain
    _probe_database(db)
    try:
        platform = open_platform(settings, database_url=db, chain=spec, write=write, strict=strict)
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


def _policy(fee_bps: int | None) -> SettlePolicy:
    """The settlement policy of the settings (fee, challenge window, claim batch), ``--fee-bps`` first."""
    from backend.app.settle import SettlePolicy

    policy = SettlePolicy.from_settings(_settings(), fee_bps=fee_bps)
    # V2G_CRASH_AT (drills): the command kills itself at that settlement step
    return replace(policy, crash_at=os.environ.get("V2G_CRASH_AT") or None)


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


def _check_bindable(host: str, port: int, option: str = "--port") -> None:
    """Bind ``host:port`` once (as the server will, with SO_REUSEADDR) so that an unknown host or a port
    in use is named, by the ``option`` that set it, before the server starts."""
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
            raise AddressUnavailableError(f"--host {host} {option} {port}: {exc.strerror}") from None


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
