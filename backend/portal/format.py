"""How the pages show money, energy and time: exact, readable, and with the raw figure on hover.

- Money: EUR to the cent (half up), the exact base units in the element's ``title`` (and in exports).
- Time: a ``<time>`` element in UTC (``datetime`` attribute and title); ``portal.js`` rewrites its text
  into the viewer's time zone, so without JavaScript it still reads correctly, in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

from markupsafe import Markup, escape

from backend.settlement.tariff import TOKEN_DECIMALS
from backend.text import count

UNIT = 10**TOKEN_DECIMALS


def eur_text(base_units: int, *, signed: bool = False) -> str:
    """EUR to the cent, rounded half up (what a person reads; the exact figure is in base units)."""
    value = Decimal(base_units).scaleb(-TOKEN_DECIMALS).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    value = value if value else Decimal("0.00")  # never "−0.00"
    text = f"{value:{'+' if signed else ''},.2f}"
    return text.replace("-", "\u2212") + " EUR"


def money(base_units: int | str | None, signed: bool = False) -> Markup:
    """``12.35 EUR`` with ``12,345,678 base units`` on hover; ``-`` for none."""
    if base_units is None:
        return Markup('<span class="none">-</span>')
    units = int(base_units)
    title = f"{units:,} base units (token with {TOKEN_DECIMALS} decimals)"
    return Markup('<span class="money" title="{}">{}</span>').format(title, eur_text(units, signed=signed))


def utc(moment: datetime | int | None, style: str = "datetime") -> Markup:
    """A ``<time>`` in UTC (``portal.js`` shows it in the viewer's zone, UTC stays on hover)."""
    if moment is None:
        return Markup('<span class="none">-</span>')
    if isinstance(moment, int):
        moment = datetime.fromtimestamp(moment, UTC)
    moment = moment.astimezone(UTC)
    iso = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    shown = moment.strftime("%H:%M" if style == "time" else "%Y-%m-%d %H:%M") + " UTC"
    return Markup('<time datetime="{}" data-style="{}" title="{}">{}</time>').format(
        iso, style, moment.strftime("%Y-%m-%d %H:%M:%S UTC"), shown
    )


def wh(value: int | None) -> Markup:
    """Energy: kWh with 3 decimals, whole Wh on hover."""
    if value is None:
        return Markup('<span class="none">-</span>')
    return Markup('<span class="energy" title="{} Wh">{} kWh</span>').format(
        f"{value:,}", f"{Decimal(value).scaleb(-3):,.3f}"
    )


def short_hex(value: str | None, keep: int = 10) -> Markup:
    """A hash or address shortened, in full on hover and for copying (``data-full``)."""
    if not value:
        return Markup('<span class="none">-</span>')
    shown = value if len(value) <= keep + 6 else f"{value[:keep]}…{value[-4:]}"
    return Markup('<code class="hex" title="{}">{}</code>').format(value, shown)


def status_badge(status: str) -> Markup:
    """A status in words with a symbol, never colour alone."""
    symbol = {
        "claimed": "✔",
        "finalised": "✔",
        "proposed": "…",
        "built": "○",
        "signed": "○",
        "disputed": "⚠",
        "succeeded": "✔",
        "failed": "✖",
        "running": "…",
        "queued": "○",
    }.get(status, "•")
    return Markup('<span class="badge badge-{}"><span aria-hidden="true">{}</span> {}</span>').format(
        escape(status), symbol, status
    )


FILTERS = {
    "money": money,
    "utc": utc,
    "wh": wh,
    "short_hex": short_hex,
    "status": status_badge,
    "count": count,
}
