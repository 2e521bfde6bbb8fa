"""Numbers a reader can check: the strategy table adds up as printed, money is shown in EUR."""

from __future__ import annotations

import io
from decimal import Decimal

from rich.console import Console
from typer.testing import CliRunner

from backend.cli import app
from backend.cli.output import MONEY_NOTE, STRATEGY_CAPTION, _strategy_table, eur
from backend.settlement.tariff import TOKEN_DECIMALS
from scheduler.schedule import Kpis

runner = CliRunner()

TERMS = ("import €", "export €", "wear €", "penalty €", "net €")
IDENTITY = "net = import − export + wear + penalty"


def kpis(import_eur: float, export_eur: float, wear_eur: float, penalty_eur: float, v2g: float) -> Kpis:
    return Kpis(
        import_cost_eur=import_eur,
        export_revenue_eur=export_eur,
        v2g_revenue_eur=v2g,
        degradation_eur=wear_eur,
        shortfall_penalty_eur=penalty_eur,
        net_cost_eur=import_eur - export_eur + wear_eur + penalty_eur,
        charged_kwh=1.0,
        discharged_kwh=0.5,
        peak_import_kw=10.0,
        peak_export_kw=0.0,
        shortfall_kwh=0.0,
        sessions_short=0,
        dr_compliance=1.0,
    )


def table_rows(text: str) -> dict[str, dict[str, str]]:
    """The strategy table's rows as {strategy: {column: cell}}, read back from the rendered text."""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith(("┃", "│"))]
    header = [cell.strip() for cell in lines[0].strip("┃").split("┃")]
    rows: dict[str, dict[str, str]] = {}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.strip("│").split("│")]
        if len(cells) == len(header) and cells[0]:
            rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def money(cell: str) -> Decimal:
    return Decimal(cell.replace(",", "").strip("()"))


def assert_rows_add_up(rows: dict[str, dict[str, str]]) -> None:
    assert "uncontrolled" in rows
    base = money(rows["uncontrolled"]["net €"])
    for name, row in rows.items():
        imported, exported, wear, penalty, net = (money(row[term]) for term in TERMS)
        assert imported - exported + wear + penalty == net, (name, row)
        assert money(row["Δ net €"]) == net - base, (name, row)


def render(table: object) -> str:
    out = Console(file=io.StringIO(), width=200, record=True)
    out.print(table)
    return out.export_text()


def test_every_row_adds_up_as_printed_even_where_rounding_bites() -> None:
    results = {
        "uncontrolled": kpis(10.005, 0.0, 0.004, 0.994, 0.0),
        "smart": kpis(-3.335, -0.004, 0.995, 0.0, 0.0),
        "v2g": kpis(1234.5678, 456.7891, 12.3449, 0.0051, 321.0),
    }
    text = render(_strategy_table("t", results))
    rows = table_rows(text)
    assert set(rows) == set(results)
    assert_rows_add_up(rows)
    # the figures shown are the KPIs to the cent, and the net within the rounding of its four terms
    for name, k in results.items():
        assert abs(money(rows[name]["net €"]) - Decimal(repr(k.net_cost_eur))) <= Decimal("0.02")
    assert rows["v2g"]["import €"] == "1,234.57" and rows["v2g"]["export €"] == "456.79"
    # V2G value is labelled as a separate figure, outside the identity
    assert rows["v2g"]["(V2G value €)"] == "(321.00)"
    assert IDENTITY in STRATEGY_CAPTION and "not added to net" in STRATEGY_CAPTION


def test_the_schedule_command_table_states_its_identity_and_adds_up() -> None:
    result = runner.invoke(app, ["schedule", "--evs", "12", "--date", "2023-07-02"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert IDENTITY in flat
    rows = table_rows(result.output)
    assert set(rows) == {"uncontrolled", "smart", "v2g"}
    assert_rows_add_up(rows)


def test_money_is_shown_in_eur_at_the_tokens_decimals() -> None:
    assert TOKEN_DECIMALS == 6
    assert eur(1_234_567) == "1.234567 EUR"
    assert eur(-5, signed=True) == "-0.000005 EUR"
    assert eur(12_000_000, signed=True) == "+12.000000 EUR"
    assert eur(123_456_789_012) == "123,456.789012 EUR"
    assert "6 decimals" in MONEY_NOTE and "1 EUR = 1,000,000 base units" in MONEY_NOTE
    assert "> 0: the owner is paid" in MONEY_NOTE
