"""The "do the paper's qualitative claims hold here?" section: computed, never written by hand.

For each conditional strategy against each baseline, the rows of Tables II/III where ours is higher
on device B, device C and the average, next to the same count from the paper's own numbers, and how
many of the per-row one-tailed z-tests of ``comparisons.csv`` are significant.
"""

from __future__ import annotations

import pandas as pd

from caanet.render import tables as T
from caanet.render.report.fmt import SIGNIFICANCE, TABLE_TITLES
from caanet.render.report.inputs import ReportInputs

CLAIM_TESTS = (("teacher_forcing", "single_device"), ("teacher_forcing", "joint"),
               ("multi_task", "single_device"), ("multi_task", "joint"))


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


def _significant(comparisons: pd.DataFrame | None, table: str, strategy_a: str, strategy_b: str) -> tuple[int, int]:
    if comparisons is None or comparisons.empty:
        return 0, 0
    sel = comparisons[(comparisons["table"].astype(str) == table)
                      & (comparisons["comparison"] == f"{strategy_a} vs {strategy_b}")
                      & (comparisons["paper_claim"] == "")]
    if sel.empty:
        return 0, 0
    if "p_avg" in sel.columns and sel["p_avg"].notna().all():    # the paper's statistic
        sig = (pd.to_numeric(sel["p_avg"], errors="coerce") < SIGNIFICANCE) & (sel["avg_a"] > sel["avg_b"])
    else:
        sig = (pd.to_numeric(sel["p_z"], errors="coerce") < SIGNIFICANCE) & (sel["acc_a"] > sel["acc_b"])
    return int(sig.sum()), len(sel)


def qualitative_claims(summaries: dict[str, pd.DataFrame], comparisons: pd.DataFrame | None) -> list[dict]:
    """For Tables II/III: conditional vs single-device and joint training on B, C and the average.

    Each entry counts the rows where ours holds and where the paper's numbers hold, plus the
    significant per-row z-tests (p < 0.05, ours better) of ``comparisons.csv``.
    """
    out = []
    for table in ("table2", "table3"):
        if table not in summaries:
            continue
        ours = _avg_and_devices(summaries[table], "acc_mean")
        rows = ours.index
        paper = T.paper_values(table)
        paper_wide = _avg_and_devices(paper, "paper_acc").reindex(rows)
        for a, b in CLAIM_TESTS:
            if (a, "avg") not in ours.columns or (b, "avg") not in ours.columns:
                continue
            entry = {"table": table, "table_name": TABLE_TITLES[table].split(":")[0],
                     "strategy_a": T.STRATEGY_NAMES[a], "strategy_b": T.STRATEGY_NAMES[b], "devices": []}
            for dev in ("b", "c", "avg"):
                wins, total = count_wins(ours, a, b, dev)
                pw, pt = count_wins(paper_wide, a, b, dev)
                entry["devices"].append({"device": T.DEVICE_NAMES[dev], "wins": wins, "total": total,
                                         "paper_wins": pw, "paper_total": pt})
            sig, tests = _significant(comparisons, table, a, b)
            entry["significant"], entry["tests"] = sig, tests
            out.append(entry)
    return out


def claims_sentences(claims: list[dict]) -> list[str]:
    """One plain sentence per entry of :func:`qualitative_claims`."""
    sentences = []
    for c in claims:
        parts = [f"{d['device']}: {d['wins']}/{d['total']} rows (paper {d['paper_wins']}/{d['paper_total']})"
                 for d in c["devices"]]
        sig = (f"; {c['significant']} of {c['tests']} per-row z-tests significant (p < {SIGNIFICANCE:g})"
               if c["tests"] else "; no per-row tests available")
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
    return (f"{TABLE_TITLES[table].split(':')[0]}: our best average is {ours}; "
            f"the paper's best over the same rows is {paper or 'not available'}.")


def build(inp: ReportInputs) -> dict:
    claims = qualitative_claims(inp.summaries, inp.comparisons)
    return {"claims": claims, "claims_sentences": claims_sentences(claims),
            "best_sentences": [s for s in (best_strategy_sentence(inp.summaries[t], t) for t in ("table2", "table3")
                                           if t in inp.summaries) if s]}
