"""Table IV's section (beyond the paper): the table, seen and unseen devices, policies and its family of tests."""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from caanet.render import tables as T
from caanet.render.report.inputs import ReportInputs
from caanet.render.report.results import table_entry
from caanet.render.report.statistics import family_section
from caanet.vocab import SUMMARY_DEVICES

BEYOND_PAPER_NOTE = (
    "Table IV goes beyond the paper: the paper has no such table, so there are no paper values to compare "
    "with. It answers questions the paper leaves open: how the strategies fare with more devices, some "
    "of them never seen in training (the DCASE 2020 Task 1A setting), whether learning the multi-task "
    "weight λ of Eq. (2) by homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018; the "
    "paper's future work) helps compared with the paper's switched λ, and, where the posterior strategies "
    "run, whether conditioning on CNN-d's posterior instead of its argmax does. Its conditional strategies "
    "use the conditioning layer Table I selected for the same row, as Table III does."
)
LEARNED_VS_SWITCHED = ("multi_task_learned vs multi_task", "multi_task_learned_posterior vs multi_task_posterior")


def unseen_policies(cells_df: pd.DataFrame | None, dataset: str) -> list[dict]:
    """The unseen-device policy each conditional strategy of ``dataset`` used, as recorded in its cells'
    ``evaluation.json`` (``cells.csv`` column ``unseen_device_policy``): ``[{strategy, name, policy}]``,
    in strategy order; several policies across a strategy's cells are joined (``zero / uniform``)."""
    if cells_df is None or "unseen_device_policy" not in cells_df.columns:
        return []
    df = cells_df[(cells_df["dataset"].astype(str) == dataset) & cells_df["unseen_device_policy"].notna()]
    out = []
    for strategy in T.STRATEGY_NAMES:
        policies = sorted(set(df.loc[df["strategy"] == strategy, "unseen_device_policy"].astype(str)))
        if policies:
            out.append({"strategy": strategy, "name": T.STRATEGY_NAMES[strategy], "policy": " / ".join(policies)})
    return out


def table4_section(entry: dict | None, summary: pd.DataFrame | None, cells_df: pd.DataFrame | None,
                   comparisons: pd.DataFrame | None, unseen: Sequence[str] = ()) -> dict | None:
    """Table IV's section: the rendered table (``entry`` as in ``tables``), the beyond-the-paper note,
    the seen and unseen devices (``unseen``: the dataset's ``unseen_devices``), the unseen-device policy
    per strategy of its cells (``cells_df``: Table IV's rows of cells.csv; :func:`unseen_policies`), and
    its family of tests from ``comparisons.csv`` (:data:`caanet.stats.TABLE4_TESTS`, decided by
    :data:`caanet.stats.TABLE4_STATISTIC`, Holm over the family), with the learned-vs-switched λ tests
    picked out. None without Table IV."""
    from caanet.stats import TABLE4_STATISTIC

    if entry is None or summary is None or summary.empty:
        return None
    devices = sorted(set(summary["device"]) - set(SUMMARY_DEVICES))
    family = family_section(comparisons, "table4")
    learned = [t for t in family["tests"]
               if t["comparison"] in {" vs ".join(T.STRATEGY_NAMES.get(s, s) for s in c.split(" vs "))
                                      for c in LEARNED_VS_SWITCHED}]
    strategies = [s for s in T.STRATEGY_NAMES if s in set(summary["strategy"])]
    return {**entry, "note": BEYOND_PAPER_NOTE, "has_single_device": "single_device" in strategies,
            "strategies": ", ".join(T.STRATEGY_NAMES[s] for s in strategies),
            "seen": ", ".join(d for d in devices if d not in set(unseen)) or "—",
            "unseen": ", ".join(d for d in devices if d in set(unseen)) or "—",
            "policies": unseen_policies(cells_df, entry["dataset"]),
            "statistic": TABLE4_STATISTIC, "tests": family["tests"], "m": family["m"],
            "n_significant": family["n_significant"], "n_paper_significant": family["n_paper_significant"],
            "level": family["level"], "learned_vs_switched": learned}


def build(inp: ReportInputs) -> dict:
    entry = table_entry(inp, "table4") if "table4" in inp.summaries else None
    return {"table4": table4_section(entry, inp.summaries.get("table4"), inp.table_cells.get("table4", inp.cells),
                                     inp.comparisons, inp.unseen.get(entry["dataset"], ()) if entry else ())}
