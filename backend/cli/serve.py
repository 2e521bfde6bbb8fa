"""`v2g serve` and `v2g operate`: the API server and live operations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from backend.cli.common import _check_bindable, _platform, _policy, _probe_database, _settings, _tls_context
from backend.cli.errors import CsmsWorkersError
from backend.cli.options import (
    ChainOpt,
    DateOpt,
    DbOpt,
    FeeOpt,
    SeedOpt,
    _chain,
    _database,
    _input_file,
    _integer,
    _real,
)
from backend.cli.output import console
from backend.cli.root import app


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

    _check_bindable(host, port)
    overrides: dict[str, Any] = {}
    if chain is not None:
        overrides["chain"] = chain
    if db is not None:
        overrides["database_url"] = db
    settings = _settings().model_copy(update=overrides)
    _probe_database(settings.database_url)
    # open the platform once here, so that a chain held by another writer or not answering is named in
    # one line before the server starts (a chain that does not match the database starts it degraded)
    with _platform(settings.database_url, settings.chain, write=True, strict=False):
        pass

    from backend.api.app import create_app

    uvicorn.run(create_app(settings), host=host, port=port)


@app.command()
def operate(
    db: DbOpt,
    host: Annotated[
        str,
        typer.Option(
            default_factory=lambda: _settings().host,
            help="Interface for the CSMS and the API (live mode); default: V2G_HOST, else 127.0.0.1.",
        ),
    ],
    port: Annotated[
        int,
        typer.Option(
            parser=_integer("--port", 1, 65_535),
            default_factory=lambda: _settings().csms_port,
            metavar="INTEGER",
            help="CSMS websocket port; default: V2G_CSMS_PORT, else 9000.",
        ),
    ],
    api_port: Annotated[
        int,
        typer.Option(
            parser=_integer("--api-port", 1, 65_535),
            default_factory=lambda: _settings().api_port,
            metavar="INTEGER",
            help="API port; default: V2G_API_PORT, else 8000.",
        ),
    ],
    import_limit_kw: Annotated[
        float,
        typer.Option(
            parser=_real("--import-limit-kw", 0.0, 1e6),
            default_factory=lambda: _settings().import_limit_kw,
            metavar="KW",
            help="Site import limit (live); default: V2G_IMPORT_LIMIT_KW, else 500.",
        ),
    ],
    export_limit_kw: Annotated[
        float,
        typer.Option(
            parser=_real("--export-limit-kw", 0.0, 1e6),
            default_factory=lambda: _settings().export_limit_kw,
            metavar="KW",
            help="Site export limit (live); default: V2G_EXPORT_LIMIT_KW, else 500.",
        ),
    ],
    csms_workers: Annotated[
        int,
        typer.Option(
            "--csms-workers",
            parser=_integer("--csms-workers", 0, 64),
            default_factory=lambda: _settings().csms_workers,
            metavar="N",
            help="Serve the stations from N CSMS processes sharing the port and the PostgreSQL database "
            "(live; 0: one process, this one); default: V2G_CSMS_WORKERS, else 0.",
        ),
    ],
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
    fee_bps: FeeOpt = None,
    calm: Annotated[
        bool, typer.Option("--calm", help="Simulated stations without trouble (no drops, skew, late cars).")
    ] = False,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            parser=_input_file("--tls-cert"),
            metavar="FILE",
            help="The CSMS's TLS certificate chain (PEM): stations connect to wss:// (live; with --tls-key); "
            "default: V2G_TLS_CERT.",
        ),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(
            parser=_input_file("--tls-key"),
            metavar="FILE",
            help="The private key (PEM, unencrypted) of --tls-cert; default: V2G_TLS_KEY.",
        ),
    ] = None,
    openadr_vtn: Annotated[
        str | None,
        typer.Option(
            "--openadr-vtn",
            metavar="URL",
            help="Register an OpenADR 2.0b VEN with this VTN and hold the DR events it sends (live; default "
            "V2G_OPENADR_VTN_URL).",
        ),
    ] = None,
) -> None:
    """Live operations: the CSMS (OCPP 2.0.1/2.1), the re-planning loop and the metering service (its own
    process and key) on the platform's chain and database. With --simulate N: N simulated stations run
    an accelerated day that ends in a metered settlement on chain and a reconciliation. Stations prove
    who they are with HTTP Basic (security profile 1); with --tls-cert and --tls-key, over TLS (2)."""
    import asyncio

    from backend.operations.run import operate_simulated_day

    if simulate == 0 and tls_cert is None and tls_key is None:  # live: the configuration's, if any
        configured = _settings()
        if configured.tls_cert or configured.tls_key:
            parse = _input_file("V2G_TLS_CERT / tls_cert")
            tls_cert = parse(configured.tls_cert) if configured.tls_cert else None
            tls_key = _input_file("V2G_TLS_KEY / tls_key")(configured.tls_key) if configured.tls_key else None
    tls = _tls_context(tls_cert, tls_key, simulate)
    if openadr_vtn is not None:
        from urllib.parse import urlsplit

        from backend.cli.errors import InvalidUrlError

        parts = urlsplit(openadr_vtn)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidUrlError(f"--openadr-vtn {openadr_vtn}: not an http(s) URL of a VTN")
        if simulate:
            raise InvalidUrlError(
                "--openadr-vtn: for live operation (a VTN's events are in real time, not a simulated day's)"
            )
    if simulate:  # a simulated day runs in one process (a configured V2G_CSMS_WORKERS is for live)
        if csms_workers and csms_workers != _settings().csms_workers:
            raise CsmsWorkersError("--csms-workers: for live operation, not a simulated day")
        csms_workers = 0
    if csms_workers:  # the pool's own rule, before anything starts
        from backend.operations.pool import CsmsWorkersNeedPostgresError, libpq_url

        try:
            libpq_url(db)
        except CsmsWorkersNeedPostgresError as exc:
            raise CsmsWorkersError(str(exc)) from None
    if simulate == 0:
        from backend.operations.run import operate_live

        _check_bindable(host, port)
        _check_bindable(host, api_port, "--api-port")
        with _platform(db, chain, write=True) as platform:
            fee = {} if fee_bps is None else {"fee_bps": fee_bps}
            vtn = {} if openadr_vtn is None else {"openadr_vtn_url": openadr_vtn}
            settings = _settings().model_copy(update={"database_url": db, "chain": chain, **fee, **vtn})
            platform.ensure_deployment(liveness_s=settings.liveness_s)
            asyncio.run(
                operate_live(
                    platform,
                    settings,
                    host=host,
                    port=port,
                    api_port=api_port,
                    import_limit_kw=import_limit_kw,
                    export_limit_kw=export_limit_kw,
                    progress=lambda line: console.print(line, soft_wrap=True),
                    ssl=tls,
                    csms_workers=csms_workers,
                    worker_args=[
                        *(["--chain", chain] if chain else []),
                        *(["--fee-bps", str(fee_bps)] if fee_bps is not None else []),
                        *(
                            ["--tls-cert", str(tls_cert), "--tls-key", str(tls_key)]
                            if tls is not None
                            else []
                        ),
                    ],
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
                policy=_policy(fee_bps),
                trouble=not calm,
                progress=lambda line: console.print(line, soft_wrap=True),
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


def _use_config(value: Path | None) -> Path | None:
    """``--config``: read before every other option, so that their defaults come from the file; the
    platform then works in the file's folder, so that its relative paths (``sqlite:///v2g.sqlite``,
    ``data_dir``, ``log_file``, ``prices_drop_dir``) mean the same wherever it is started from (a
    service manager starts it in ``/``)."""
    import os

    if value is not None:
        path = value.resolve()
        os.environ["V2G_CONFIG"] = str(path)
        os.chdir(path.parent)
    return value


@app.command("run")
def run_platform(
    db: DbOpt,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            parser=_input_file("--config"),
            callback=_use_config,
            is_eager=True,
            metavar="FILE",
            help="The configuration (TOML, see examples/v2g.toml; the platform works in its folder); "
            "default: V2G_CONFIG, else ./v2g.toml.",
        ),
    ] = None,
    chain: ChainOpt = None,
    fee_bps: FeeOpt = None,
) -> None:
    """The whole live platform from one configuration: the metering service (its own process, the only
    one with the meter key) and the platform (CSMS, re-planning, API and portal, the jobs on the market's
    clock: settling each ended day, finalising, importing prices; the OpenADR VEN when configured), each
    started again when it exits, both stopped cleanly by SIGTERM or Ctrl-C. Ports, limits and jobs come
    from the configuration (host, csms_port, api_port, meter_port, import_limit_kw, ...)."""
    from backend.operations.supervisor import Supervisor, platform_children

    settings = _settings()
    for port, name in (
        (settings.csms_port, "csms_port"),
        (settings.api_port, "api_port"),
        (settings.meter_port, "meter_port"),
    ):
        _check_bindable(settings.host if name != "meter_port" else "127.0.0.1", port, f"(setting {name})")
    # the database and the chain checked, and deployed on, once here: a mismatch is one line before start
    with _platform(db, chain, write=True) as platform:
        platform.ensure_deployment(liveness_s=settings.liveness_s)
    fee = _policy(fee_bps).fee_bps
    console.print(
        f"v2g run: platform on {settings.host} (CSMS :{settings.csms_port}, API and portal "
        f":{settings.api_port}), metering service on 127.0.0.1:{settings.meter_port}; database {db}; "
        f"working in {Path.cwd()}",
        markup=False,
        soft_wrap=True,
    )
    children = platform_children(settings, database_url=db, chain=chain, fee_bps=fee)
    code = Supervisor(
        children, say=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True)
    ).run()
    raise typer.Exit(code)
