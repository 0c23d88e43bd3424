"""Number and text formatting shared by the report's sections."""

from __future__ import annotations

import math

import pandas as pd

SIGNIFICANCE = 0.05
TABLE_TITLES = {
    "table1": "Table I: teacher-forcing conditioning at each layer",
    "table2": "Table II: the training strategies (DCASE 2018 in the paper)",
    "table3": "Table III: the training strategies (DCASE 2019 in the paper)",
    "table4": "Table IV (beyond the paper): the training strategies with seen and unseen devices",
    "table5": "Table V (beyond the paper): CAA-Net and the field's device-robustness methods",
}
"""Each table's name and subject; :func:`table_title` adds what its summary holds (devices, strategies)."""


def table_name(table: str) -> str:
    """``"Table II"`` for ``"table2"``, ``"Table IV"`` for ``"table4"`` (its title's first two words)."""
    return " ".join(TABLE_TITLES[table].split()[:2]).rstrip(":")


def table_title(table: str, summary: pd.DataFrame | None) -> str:
    """The title of ``table``, derived from its summary: Table I names its devices, Tables II-IV count
    their strategies (``"Table II: the four training strategies ..."``)."""
    from caanet.render import tables as T
    from caanet.spec import STRATEGIES

    title = TABLE_TITLES[table]
    if summary is None or summary.empty:
        return title
    if table == "table1":
        return f"{title} (average over devices {T.devices_text(T.summary_devices(summary))})"
    k = T.count_words(sum(s in set(summary["strategy"]) for s in STRATEGIES))
    return title.replace("the training strategies", f"{'the ' if table != 'table4' else ''}{k} training strategies")


def devices_sentence(devices) -> str:
    """``["a", "b", "c"]`` -> ``"A, B and C"``."""
    from caanet.render import tables as T

    names = [T.DEVICE_NAMES.get(d, str(d).upper()) for d in devices]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1] if names else "—"


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
