"""The multi-task section: what λ of Eq. (2) does in this run.

* The findings of this reproduction about the paper's method (:data:`caanet.fidelity.FINDINGS`: name,
  title, text and the tests that prove each), with the run's own numbers: for each dataset and seed,
  the device accuracy CNN-d reaches in each multi-task cell (``cells.csv``'s ``device_accuracy``,
  percent), grouped by how the device reaches the scene network (argmax or posterior): with the argmax
  no gradient of the scene loss reaches CNN-d, so those cells share one CNN-d and one device accuracy.
* How often Eq. 2's switch fired, per table (``lambda_switched_at``; :mod:`caanet.render.switches`).
* Table IV's direct learned-vs-switched λ tests, where they ran.

Columns that ``cells.csv`` lacks (results written before they existed) leave their part out.
"""

from __future__ import annotations

import pandas as pd

from caanet.render.report.fmt import _fmt, table_name
from caanet.render.report.inputs import ReportInputs
from caanet.render.switches import switch_count
from caanet.vocab import STRATEGY_REGISTRY

CELL_KEYS = ["dataset", "cell_id", "seed"]


def device_input(strategy: str) -> str | None:
    """How a strategy's scene network gets CNN-d's device: ``argmax`` (the paper's one-hot),
    ``posterior``, or None for a strategy without CNN-d (its registry entry's ``device_input``; a
    predicted-device strategy registered without one is the paper's argmax)."""
    if strategy not in STRATEGY_REGISTRY:
        return None
    entry = STRATEGY_REGISTRY[strategy]
    if entry.device_source != "predicted":
        return None
    return getattr(entry, "device_input", None) or "argmax"


def _field(finding, key: str):
    return finding.get(key) if isinstance(finding, dict) else getattr(finding, key, None)


def findings() -> list[dict]:
    """:data:`caanet.fidelity.FINDINGS` as plain records (name, title, text, tests); [] where none."""
    from caanet import fidelity

    out = []
    for f in getattr(fidelity, "FINDINGS", ()) or ():
        tests = _field(f, "tests") or ()
        out.append({"name": str(_field(f, "name")), "title": str(_field(f, "title")), "text": str(_field(f, "text")),
                    "tests": [str(t) for t in ([tests] if isinstance(tests, str) else tests)]})
    return out


def device_accuracy_groups(table_cells: dict[str, pd.DataFrame]) -> list[dict]:
    """Per dataset, seed and device input (argmax, posterior): the multi-task cells of the strategy
    tables and the distinct device accuracies (percent) CNN-d reached in them, from ``cells.csv``'s
    ``device_accuracy``. [] when the column is absent."""
    frames = [df for t, df in table_cells.items() if t != "table1" and df is not None and "device_accuracy" in df.columns]
    if not frames:
        return []
    df = pd.concat(frames, ignore_index=True).drop_duplicates(CELL_KEYS)
    df = df.assign(device_input=df["strategy"].map(device_input)).dropna(subset=["device_input", "device_accuracy"])
    out = []
    for (dataset, seed, kind), g in df.groupby(["dataset", "seed", "device_input"], sort=True):
        values = sorted(set(pd.to_numeric(g["device_accuracy"], errors="coerce").round(6).dropna()))
        if not values:
            continue
        out.append({"dataset": str(dataset), "seed": int(seed), "input": kind, "cells": len(g),
                    "distinct": len(values), "low": _fmt(values[0], ".2f"), "high": _fmt(values[-1], ".2f"),
                    "strategies": ", ".join(sorted(set(g["strategy"])))})
    return out


def device_accuracy_sentences(groups: list[dict]) -> list[str]:
    """One sentence per group of :func:`device_accuracy_groups`."""
    out = []
    for g in groups:
        head = f"{g['dataset']}, seed {g['seed']}: the {g['cells']} {g['input']} multi-task cells ({g['strategies']})"
        if g["distinct"] == 1:
            out.append(f"{head} all report one device accuracy of CNN-d, {g['low']} %.")
        else:
            out.append(f"{head} report {g['distinct']} different device accuracies of CNN-d, {g['low']}–{g['high']} %.")
    return out


def switch_counts(table_cells: dict[str, pd.DataFrame], switch_acc: float | None = None) -> dict:
    """How many switched-λ cells (cell x seed) switched, per table and in all: ``{"tables": [...],
    "switched", "cells", "sentence"}``; ``sentence`` is "" where ``cells.csv`` does not record it. For a
    table where some never switched, the sentence gives CNN-d's final accuracy on the seen devices' test
    clips in those cells (:func:`caanet.render.switches.unswitched_device_accuracy`) beside the threshold
    ``switch_acc`` (a fraction; Eq. 2's ``training.lambda_switch_acc``), which the rule checks on its own
    split (validation or test, ``lambda_source`` in each evaluation.json)."""
    from caanet.render.switches import unswitched_device_accuracy

    rows, switched, total, below = [], 0, 0, []
    for table, df in table_cells.items():
        count = switch_count(df)
        if count is None or count[1] == 0:
            continue
        rows.append({"table": table_name(table), "switched": count[0], "cells": count[1]})
        switched, total = switched + count[0], total + count[1]
        acc = unswitched_device_accuracy(df)
        if acc is not None:
            below.append(f"{table_name(table)}, mean {acc[0]:.1f} %, at most {acc[1]:.1f} %")
    sentence = ""
    if rows:
        sentence = (f"λ of Eq. (2) switched in {switched} of {total} multi-task cells with the switched λ (cell x "
                    "seed): " + "; ".join(f"{r['table']} {r['switched']} of {r['cells']}" for r in rows)
                    + ". The tables mark them (†).")
        if below:
            threshold = f" (the switch needs {100 * switch_acc:g} %)" if switch_acc is not None else ""
            sentence += (" Where it never switched, CNN-d's final device accuracy on the seen devices' test clips"
                         f"{threshold}: " + "; ".join(below) + ".")
    return {"tables": rows, "switched": switched, "cells": total, "sentence": sentence}


def switch_accuracy(preset: dict) -> float:
    """Eq. 2's switch threshold of the preset (``training.lambda_switch_acc``, else the default the schema
    documents, equal to the code's: tests/test_schema.py)."""
    from caanet.config import subschema

    default = subschema("#/$defs/training/properties/lambda_switch_acc")["default"]
    return float((preset.get("training") or {}).get("lambda_switch_acc", default))


def build(inp: ReportInputs) -> dict:
    return {"multitask": {"findings": findings(),
                          "device_accuracy": device_accuracy_sentences(device_accuracy_groups(inp.table_cells)),
                          "switches": switch_counts(inp.table_cells, switch_accuracy(inp.preset))}}
