"""The statistics section: the paper's two claims (claims.csv) and the per-row tests (comparisons.csv)."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from caanet.render.report.fmt import SIGNIFICANCE, _fmt, _fmt_p, _p_is, _seeds_text, _truth
from caanet.render.report.inputs import ReportInputs

ZTEST_FORMULA = "z = (p̂_a − p̂_b) / √( p̂ (1 − p̂) (1/n_a + 1/n_b) ),  p̂ = (k_a + k_b) / (n_a + n_b),  p = 1 − Φ(z)"
ZTEST_FORMULA_TEX = (r"z = \frac{\hat p_a - \hat p_b}{\sqrt{\hat p(1-\hat p)(1/n_a + 1/n_b)}},\quad"
                     r"\hat p = \frac{k_a + k_b}{n_a + n_b},\quad p = 1 - \Phi(z)")
N_EXPLAINED = (
    "As in the paper, p̂_a and p̂_b are the two models' Avg (the mean over the devices of the class-wise "
    "accuracy, Table II's Avg column) and n_a = n_b = n the number of test clips of the fold (all devices "
    "together; a single-device model is its per-device cells together, so both models see the same clips; "
    "2,878 in the paper's DCASE 2018 fold 1). The test is one-tailed (H1: model a is better); this is the "
    "statistic that decides each of the paper's claims. Beside it, labelled and not deciding: the same z-test "
    "on the clip-level accuracy k/n (dominated by device A, which has most of the test clips) and McNemar's "
    "paired test (b: clips only model a got right, c: clips only model b got right)."
)
MCNEMAR_NOTE = (
    "McNemar's test is the more appropriate test here: both models classify the same clips, and it uses that "
    "pairing (only the clips on which they disagree count), whereas both z-tests treat the two models' clips "
    "as independent samples."
)


def claim_threshold(text: str) -> float | None:
    """The significance level a claim text states (``... p < 0.01`` -> 0.01), or None."""
    m = re.search(r"p\s*<\s*([0-9]*\.?[0-9]+)", text or "")
    return float(m.group(1)) if m else None


def _comparison_record(r: dict) -> dict:
    threshold = claim_threshold(r.get("paper_claim", ""))
    level = threshold if threshold is not None else SIGNIFICANCE
    has_avg = not pd.isna(r.get("p_avg", math.nan))
    a_key, b_key, p_key = ("avg_a", "avg_b", "p_avg") if has_avg else ("acc_a", "acc_b", "p_z")
    better = float(r[a_key]) > float(r[b_key])
    p = float(r[p_key]) if not pd.isna(r[p_key]) else math.nan
    holds = bool(better and not math.isnan(p) and p < level)
    return {
        "table": r["table"], "comparison": r["comparison"], "row": r["row"], "model_a": r["model_a"],
        "model_b": r["model_b"], "seed": "" if pd.isna(r.get("seed")) else int(r["seed"]),
        "n": "" if pd.isna(r["n"]) else int(r["n"]), "acc_a": _fmt(r["acc_a"]), "acc_b": _fmt(r["acc_b"]),
        "z": _fmt(r["z"], ".2f"), "p_z": _fmt_p(r["p_z"]),
        "avg_a": _fmt(r.get("avg_a")), "avg_b": _fmt(r.get("avg_b")), "z_avg": _fmt(r.get("z_avg"), ".2f"),
        "p_avg": _fmt_p(r.get("p_avg")),
        "mcnemar": "—" if pd.isna(r.get("mcnemar_p", np.nan)) else
        f"b={int(r['mcnemar_b'])}, c={int(r['mcnemar_c'])}, p={_fmt_p(r['mcnemar_p'])}",
        "method": r.get("method", "") if not pd.isna(r.get("method", "")) else "",
        "paper_claim": r.get("paper_claim", ""), "level": level, "holds": holds,
        "verdict": ("holds" if holds else "does not hold") + f" at p < {level:g}",
    }


def claim_record(r: dict) -> dict:
    """One row of claims.csv formatted for the templates, with the verdict in words."""
    holds, alpha = _truth(r.get("holds")), float(r["alpha"])
    if r.get("status") != "evaluated" or holds is None:
        verdict = f"not tested here ({r.get('status', 'no result')})"
    else:
        verdict = ("holds" if holds else "does not hold") + f" at p < {alpha:g}"
    paper_holds = _truth(r.get("paper_holds"))
    return {
        "claim": r["claim"], "text": r["text"], "cell_a": "" if pd.isna(r.get("cell_a")) else r["cell_a"],
        "cell_b": "" if pd.isna(r.get("cell_b")) else r["cell_b"],
        "seeds": _seeds_text(r.get("seeds")),
        "n": "" if pd.isna(r.get("n")) else int(r["n"]), "statistic": r["statistic"],
        "ours_a": _fmt(r.get("ours_a")), "ours_b": _fmt(r.get("ours_b")), "z": _fmt(r.get("z"), ".2f"),
        "p": _fmt_p(r.get("p")), "verdict": verdict, "holds": holds,
        "clip": ("—" if pd.isna(r.get("clip_z")) else
                 f"{_fmt(r['clip_acc_a'])} vs {_fmt(r['clip_acc_b'])}, z={_fmt(r['clip_z'], '.2f')}, "
                 + _p_is(r['clip_p'])),
        "mcnemar": ("—" if pd.isna(r.get("mcnemar_p")) else
                    f"b={int(r['mcnemar_b'])}, c={int(r['mcnemar_c'])}, " + _p_is(r['mcnemar_p'])),
        "paper": (f"{_fmt(r['paper_a'])} vs {_fmt(r['paper_b'])}, n={int(r['paper_n'])}: z={_fmt(r['paper_z'], '.2f')}, "
                  + _p_is(r['paper_p']) + f" ({'holds' if paper_holds else 'does not hold'})"),
    }


def statistics_section(comparisons: pd.DataFrame | None, claims: pd.DataFrame | None = None) -> dict:
    """The paper's claims (from claims.csv) and the per-row tests, formatted for the templates."""
    out = {"formula": ZTEST_FORMULA, "formula_tex": ZTEST_FORMULA_TEX, "n_explained": N_EXPLAINED,
           "mcnemar_note": MCNEMAR_NOTE,
           "present": (comparisons is not None and len(comparisons) > 0) or (claims is not None and len(claims) > 0),
           "claims": [], "rows": []}
    if claims is not None:
        out["claims"] = [claim_record(r) for r in claims.to_dict("records")]
    if comparisons is not None and len(comparisons):
        records = [_comparison_record(r) for r in comparisons.to_dict("records")]
        out["rows"] = [r for r in records if not r["paper_claim"]]
    return out


def build(inp: ReportInputs) -> dict:
    return {"stats": statistics_section(inp.comparisons, inp.claims)}
