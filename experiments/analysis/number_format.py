"""How every number in the report is written: three significant digits, whole numbers from 1000."""

from __future__ import annotations

import math
from typing import Any


def format_number(value: Any) -> str:
    """Numbers as a reader wants them: 3 significant digits, whole numbers above 1000."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if value == 0:
            return "0"
        # "#" keeps trailing zeros (2.50, not 2.5): every number shows the same three digits.
        return f"{value:#.3g}".rstrip(".")
    return str(value)


def format_signed(value: float) -> str:
    """A difference with its sign always shown (a true minus sign)."""
    if math.isnan(value):
        return "–"
    text = format_number(abs(value))
    return ("+" if value > 0 else "−" if value < 0 else "±") + text


def format_interval(low: float, high: float, signed: bool = False) -> str:
    if math.isnan(low) or math.isnan(high):
        return "[no interval]"
    show = format_signed if signed else format_number
    return f"[{show(low)}, {show(high)}]"


def format_ratio(value: float) -> str:
    return "–" if math.isnan(value) else "×" + format_number(float(value))
