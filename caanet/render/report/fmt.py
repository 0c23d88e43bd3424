"""Number and text formatting shared by the report's sections."""

from __future__ import annotations

import math

SIGNIFICANCE = 0.05
TABLE_TITLES = {
    "table1": "Table I: teacher-forcing conditioning at each layer (average over devices A, B, C)",
    "table2": "Table II: the four training strategies (DCASE 2018 in the paper)",
    "table3": "Table III: the four training strategies (DCASE 2019 in the paper)",
    "table4": "Table IV (beyond the paper): five training strategies with seen and unseen devices",
}


def table_name(table: str) -> str:
    """``"Table II"`` for ``"table2"`` (the part of its title before the colon)."""
    return TABLE_TITLES[table].split(":")[0]


def _fmt(x, spec: str = ".1f") -> str:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return "—"
    return "—" if math.isnan(x) else format(x, spec)


def _fmt_p(p) -> str:
    try:
        p = float(p)
    except (TypeError, ValueError):
        return "—"
    if math.isnan(p):
        return "—"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def _p_is(p) -> str:
    """``p=0.0082`` or ``p<0.0001`` (no ``p=<``)."""
    text = _fmt_p(p)
    return f"p{text.replace(' ', '')}" if text.startswith("<") else f"p={text}"


def _seeds_text(value) -> str:
    """claims.csv's ``seeds`` ("0 1 2"; a lone seed may come back from pandas as 0 or 0.0) as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _truth(value) -> bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value).strip().lower() in ("true", "1", "1.0")
