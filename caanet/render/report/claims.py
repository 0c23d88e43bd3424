"""The "do the paper's qualitative claims hold here?" section: computed, never written by hand.

For each conditional strategy against each baseline, the rows of Tables II/III where ours is higher
on each seen device other than the reference one (the paper's B and C) and on the average, next to the
same count from the paper's own numbers, and how many of the seed-mean tests of ``comparisons.csv`` are
significant after Holm's correction over the table's family (and, uncorrected, by the paper's test).
"""

from __future__ import annotations

import pandas as pd

from caanet.render import tables as T
from caanet.render.report.fmt import SIGNIFICANCE, _truth, table_name
from caanet.render.report.inputs import ReportInputs
from caanet.render.report.statistics import seed_mean_rows
from caanet.stats import ROW_TESTS

CLAIM_TESTS = tuple((t.strategy_a, t.strategy_b) for t in ROW_TESTS)
"""The qualitative claims: Tables II and III's family of tests (:data:`caanet.stats.ROW_TESTS`)."""


def _avg_and_devices(df: pd.DataFrame, value: str) -> pd.DataFrame:
    """Wide (topology, pooling) x (strategy, device) frame of ``value`` from a long frame."""
    return df.pivot_table(index=["topology", "pooling"], columns=["strategy", "device"], values=value, aggfunc="first")


def count_wins(wide: pd.DataFrame, strategy_a: str, strategy_b: str, device: str) -> tuple[int, int]:
    """Rows where ``strategy_a`` beats ``strategy_b`` on ``device``; returns (wins, rows compared)."""
    if (strategy_a, device) not in wide.columns or (strategy_b, device) not in wide.columns:
        return 0, 0
    a, b = wide[(strategy_a, device)], wide[(strategy_b, device)]
    ok = a.notna() & b.notna()
    return int((a[ok].round(1) > b[ok].round(1)).sum()), int(ok.sum())


def _significant(comparisons: pd.DataFrame | None, table: str, strategy_a: str, strategy_b: str) -> dict:
    """The seed-mean tests of ``strategy_a`` vs ``strategy_b`` over ``table``'s rows (all devices):
    how many, how many significant after Holm over the table's family (the paired test), and how many
    by the paper's z-test on the Avg, uncorrected (p < 0.05, a better); the family's size."""
    rows = seed_mean_rows(comparisons)
    if rows.empty:
        return {"tests": 0, "significant": 0, "paper_significant": 0, "m": 0}
    family = rows[rows["family"] == table]
    sel = family[(family["comparison"] == f"{strategy_a} vs {strategy_b}") & (family["scope"].fillna("all") == "all")]
    paper = (pd.to_numeric(sel["p_avg"], errors="coerce") < SIGNIFICANCE) & (sel["avg_a"] > sel["avg_b"])
    return {"tests": len(sel), "significant": int(sel["significant"].map(_truth).fillna(False).astype(bool).sum()),
            "paper_significant": int(paper.sum()), "m": len(family)}


def claim_devices(summary: pd.DataFrame, reference: str | None, unseen=()) -> list[str]:
    """The devices the paper's qualitative claim is about, for this table's dataset: its seen devices
    other than the reference device (the paper's B and C), then the Avg."""
    devices = [d for d in T.summary_devices(summary) if d != reference and d not in set(unseen)]
    return devices + ["avg"]


def qualitative_claims(summaries: dict[str, pd.DataFrame], comparisons: pd.DataFrame | None,
                       reference: dict | None = None, unseen: dict | None = None) -> list[dict]:
    """For Tables II/III: conditional vs single-device and joint training on each non-reference seen
    device of the table's dataset (the paper's B and C) and the Avg.

    Each entry counts the rows where ours is higher and where the paper's numbers are (for the devices
    the paper has), and the seed-mean tests of ``comparisons.csv`` significant after Holm's correction
    over the table's family (the paired test) and, uncorrected, by the paper's z-test on the Avg.
    """
    out = []
    for table in ("table2", "table3"):
        if table not in summaries:
            continue
        summary = summaries[table]
        dataset = str(summary["dataset"].iloc[0]) if "dataset" in summary.columns and len(summary) else ""
        ours = _avg_and_devices(summary, "acc_mean")
        rows = ours.index
        paper = T.paper_values(table)
        paper_wide = _avg_and_devices(paper, "paper_acc").reindex(rows)
        for a, b in CLAIM_TESTS:
            if (a, "avg") not in ours.columns or (b, "avg") not in ours.columns:
                continue
            entry = {"table": table, "table_name": table_name(table),
                     "strategy_a": T.STRATEGY_NAMES[a], "strategy_b": T.STRATEGY_NAMES[b], "devices": []}
            ref = (reference or {}).get(dataset, T.summary_devices(summary)[0] if T.summary_devices(summary) else None)
            for dev in claim_devices(summary, ref, (unseen or {}).get(dataset, ())):
                wins, total = count_wins(ours, a, b, dev)
                pw, pt = count_wins(paper_wide, a, b, dev)
                entry["devices"].append({"device": T.DEVICE_NAMES.get(dev, dev.upper()), "wins": wins, "total": total,
                                         "paper_wins": pw, "paper_total": pt})
            entry.update(_significant(comparisons, table, a, b))
            out.append(entry)
    return out


def claims_sentences(claims: list[dict]) -> list[str]:
    """One plain sentence per entry of :func:`qualitative_claims`."""
    sentences = []
    for c in claims:
        parts = [f"{d['device']}: {d['wins']}/{d['total']} rows"
                 + (f" (paper {d['paper_wins']}/{d['paper_total']})" if d["paper_total"] else " (not in the paper)")
                 for d in c["devices"]]
        sig = (f"; {c['significant']} of {c['tests']} tests significant after Holm's correction over the table's "
               f"{c['m']} tests (paired test of the seed-mean Avg), {c['paper_significant']} of {c['tests']} by the "
               f"paper's z-test on the Avg, uncorrected (p < {SIGNIFICANCE:g})"
               if c["tests"] else "; no tests available")
        sentences.append(f"{c['table_name']}, {c['strategy_a']} better than {c['strategy_b']}: " + ", ".join(parts) + sig + ".")
    return sentences


def best_strategy_sentence(summary: pd.DataFrame, table: str) -> str:
    """Which row and strategy has the best Avg in ``table``: ours, and the paper's over the same rows."""
    def best(df, value):
        avg = df[df["device"] == "avg"].dropna(subset=[value])
        if avg.empty:
            return None
        r = avg.sort_values(value, ascending=False, kind="stable").iloc[0]
        return (f"{T.TOPOLOGY_NAMES[r['topology']]} + {T.POOLING_NAMES[r['pooling']]}, "
                f"{T.STRATEGY_NAMES[r['strategy']].lower()} ({r[value]:.1f}%)")
    ours = best(summary, "acc_mean")
    if ours is None:
        return ""
    rows = set(map(tuple, summary[["topology", "pooling"]].to_numpy().tolist()))
    paper = T.paper_values(table)
    paper = best(paper[[(t, p) in rows for t, p in zip(paper["topology"], paper["pooling"])]], "paper_acc")
    return (f"{table_name(table)}: our highest average is {ours}; the paper's highest over the same rows is "
            f"{paper or 'not available'} (point estimates: the tests say which differences are significant).")


def build(inp: ReportInputs) -> dict:
    claims = qualitative_claims(inp.summaries, inp.comparisons, inp.reference, inp.unseen)
    return {"claims": claims, "claims_sentences": claims_sentences(claims),
            "best_sentences": [s for s in (best_strategy_sentence(inp.summaries[t], t) for t in ("table2", "table3")
                                           if t in inp.summaries) if s]}
