"""Figures people read: EUR to the cent (half up), the exact base units on hover."""

from __future__ import annotations

import pytest

from backend.portal.format import eur_text, money
from backend.text import count


@pytest.mark.parametrize(
    ("units", "signed", "shown"),
    [
        (-632_913, False, "\u22120.63 EUR"),
        (5_000, False, "0.01 EUR"),  # half a cent and up rounds up
        (4_999, False, "0.00 EUR"),
        (-3, False, "0.00 EUR"),  # never a negative zero
        (1_234_567_890, True, "+1,234.57 EUR"),
        (-1_234_565_000, True, "\u22121,234.57 EUR"),  # half up: away from zero
    ],
)
def test_eur_to_the_cent(units: int, signed: bool, shown: str) -> None:
    assert eur_text(units, signed=signed) == shown


def test_the_exact_base_units_are_on_hover() -> None:
    assert str(money(-632_913)) == (
        '<span class="money" title="-632,913 base units (token with 6 decimals)">\u22120.63 EUR</span>'
    )
    assert str(money(None)) == '<span class="none">-</span>'


def test_plurals_agree() -> None:
    assert [count(n, "period") for n in (0, 1, 2)] == ["0 periods", "1 period", "2 periods"]
    assert count(1_024, "entry", "entries") == "1,024 entries" and count(1, "entry", "entries") == "1 entry"
