"""What people read: the consoles, money in EUR, the strategy and settlement tables.

Money shown to people is in EUR; the settlement token has ``TOKEN_DECIMALS`` (6) decimals, so one EUR
is 1,000,000 base units, and base units appear only in machine output (JSON, CSV, on chain)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from backend.settlement.tariff import TOKEN_DECIMALS

if TYPE_CHECKING:
    from backend.app.settle import DayResult
    from scheduler.schedule import Kpis

# Full width in a terminal; a fixed, wide layout in logs and pipes (CI, `make demo | tee`).
console = Console(width=None if sys.stdout.isatty() else 132)
# Error lines: stderr, never wrapped, no markup or highlighting taken from the message.
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


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
