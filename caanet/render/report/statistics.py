"""The statistics section: the paper's two claims (claims.csv), judged by the paper's test with the tests
whose variance is the Avg's beside it, and the families of tests of Tables II and III (comparisons.csv)."""

from __future__ import annotations

import math

import pandas as pd

from caanet.render import tables as T
from caanet.render.report.fmt import SIGNIFICANCE, _fmt, _fmt_p, _p_is, _seeds_text, _truth, table_name
from caanet.render.report.inputs import ReportInputs

ZTEST_FORMULA = "z = (p̂_a − p̂_b) / √( p̂ (1 − p̂) (1/n_a + 1/n_b) ),  p̂ = (k_a + k_b) / (n_a + n_b),  p = 1 − Φ(z)"
ZTEST_FORMULA_TEX = (r"z = \frac{\hat p_a - \hat p_b}{\sqrt{\hat p(1-\hat p)(1/n_a + 1/n_b)}},\quad"
                     r"\hat p = \frac{k_a + k_b}{n_a + n_b},\quad p = 1 - \Phi(z)")
PAIRED_FORMULA = ("Δ = Σ_{d,s} w_{d,s} m_{d,s},  Var(Δ) = Σ_{d,s} w_{d,s}² s²_{d,s} / n_{d,s},  w_{d,s} = 1 / (D S_d),  "
                  "z = Δ / √Var(Δ)")
PAIRED_FORMULA_TEX = (r"\Delta = \sum_{d,s} w_{d,s}\,m_{d,s},\quad \mathrm{Var}(\Delta) = \sum_{d,s} "
                      r"w_{d,s}^2\,\frac{s_{d,s}^2}{n_{d,s}},\quad w_{d,s} = \frac{1}{D\,S_d},\quad "
                      r"z = \frac{\Delta}{\sqrt{\mathrm{Var}(\Delta)}}")
STRATIFIED_FORMULA = "Var(Δ) = (1/D²) Σ_d p̄_d (1 − p̄_d) (1/n_a,d + 1/n_b,d),  n_eff = D² / Σ_d 1/n_d"
STRATIFIED_FORMULA_TEX = (r"\mathrm{Var}(\Delta) = \frac{1}{D^2}\sum_d \bar p_d(1-\bar p_d)\Big(\frac{1}{n_{a,d}} + "
                          r"\frac{1}{n_{b,d}}\Big),\quad n_\mathrm{eff} = \frac{D^2}{\sum_d 1/n_d}")
N_EXPLAINED = (
    "As in the paper, p̂_a and p̂_b are the two models' Avg (the mean over the devices of the class-wise "
    "accuracy, Table II's Avg column) and n_a = n_b = n the number of test clips of the fold (all devices "
    "together; a single-device model is its per-device cells together, so both models see the same clips; "
    "2,878 in the paper's DCASE 2018 fold 1). The test is one-tailed (H1: model a is better); this is the "
    "statistic that decides each of the paper's claims."
)
PAIRED_EXPLAINED = (
    "The tests whose variance is the Avg's: the paired z-test stratified by device d and scene s, where m_{d,s} "
    "is the mean over the stratum's n_{d,s} clips of the difference of the two models' correctness, s²_{d,s} its "
    "sample variance and S_d the scenes of device d (the Avg's own weights); and, from per-device accuracies p_d "
    "and test clips n_d alone, the unpaired device-stratified z-test (p̄_d pooled over both models under H0; "
    "with one device it is the paper's test). Beside them, labelled and not deciding: the paper's z-test on the "
    "clip-level accuracy k/n and McNemar's paired test per seed (b: clips only model a got right, c: clips only "
    "model b got right)."
)
SEEDS_NOTE = (
    "Seeds: a test over several seeds is a test of the seed-mean model. Each clip's correctness is averaged over "
    "the seeds both models were trained with before testing, so the Avg tested is the tables' mean over seeds and "
    "the variance is that of the test clips, with the trained models held fixed; the spread between seeds is the "
    "± of the tables, not part of the tests. comparisons.csv also has each seed's own row."
)
MCNEMAR_NOTE = (
    "McNemar's test uses the pairing too (only the clips on which the models disagree count); the paper's "
    "z-tests treat the two models' clips as independent samples."
)


def why_tests_differ(claims: pd.DataFrame | None) -> str:
    """Two sentences on why the paper's test and the device-stratified test differ, with the numbers of
    the paper's fold (``claims.csv``'s ``paper_n_by_device``, ``paper_n_eff``, ``paper_p``,
    ``paper_stratified_p`` of its first claim); "" without claims."""
    if claims is None or claims.empty or "paper_n_eff" not in claims.columns:
        return ""
    r = claims.iloc[0]
    counts = dict(part.split(":") for part in str(r["paper_n_by_device"]).split())
    largest = max(counts, key=lambda d: int(counts[d]))
    small = [d for d in counts if d != largest]
    small_text = " and ".join(T.DEVICE_NAMES.get(d, d.upper()) for d in small)
    n_small = sorted({int(counts[d]) for d in small})
    return (
        f"The paper's z-test gives the Avg the binomial variance of all {int(r['paper_n']):,} test clips, as if each "
        f"clip weighed the same; but the Avg weighs every device equally, so the {'/'.join(map(str, n_small))} clips "
        f"each of {small_text} carry {T.count_words(len(small))} of its {T.count_words(len(counts))} equal parts and "
        "its variance is that of about "
        f"{_fmt(r['paper_n_eff'], '.0f')} clips (n_eff = D² / Σ_d 1/n_d): on the paper's own numbers {r['claim']} "
        f"has p = {_fmt_p(r['paper_p'])} under the paper's test and p = {_fmt_p(r['paper_stratified_p'])} under "
        "the device-stratified one. The paired test has the Avg's variance too and, since both models classified "
        "the same clips, only the clips on which they disagree add to it: it is stronger than the unpaired tests "
        "when the models' errors fall on the same clips, and it needs no independence between the two models."
    )


def claim_record(r: dict) -> dict:
    """One row of claims.csv formatted for the templates, with the verdicts in words."""
    holds, alpha = _truth(r.get("holds")), float(r["alpha"])
    if r.get("status") != "evaluated" or holds is None:
        verdict = f"not tested here ({r.get('status', 'no result')})"
    else:
        verdict = ("holds" if holds else "does not hold") + f" at p < {alpha:g}"
    paper_holds = _truth(r.get("paper_holds"))
    paired_holds = _truth(r.get("paired_holds"))
    paper_strat = _truth(r.get("paper_stratified_holds"))
    return {
        "claim": r["claim"], "text": r["text"], "cell_a": "" if pd.isna(r.get("cell_a")) else r["cell_a"],
        "cell_b": "" if pd.isna(r.get("cell_b")) else r["cell_b"],
        "seeds": _seeds_text(r.get("seeds")),
        "n": "" if pd.isna(r.get("n")) else int(r["n"]), "statistic": r["statistic"],
        "ours_a": _fmt(r.get("ours_a")), "ours_b": _fmt(r.get("ours_b")), "z": _fmt(r.get("z"), ".2f"),
        "p": _fmt_p(r.get("p")), "verdict": verdict, "holds": holds,
        "paired": ("—" if pd.isna(r.get("paired_p")) else
                   f"Δ = {_fmt(r['paired_diff'])} ± {_fmt(r['paired_se'])} points, z={_fmt(r['paired_z'], '.2f')}, "
                   + _p_is(r["paired_p"]) + f" ({'holds' if paired_holds else 'does not hold'} at p < {alpha:g})"),
        "stratified": ("—" if pd.isna(r.get("stratified_p")) else
                       f"z={_fmt(r['stratified_z'], '.2f')}, " + _p_is(r["stratified_p"])
                       + f" (n_eff = {_fmt(r.get('n_eff'), '.0f')})"),
        "clip": ("—" if pd.isna(r.get("clip_z")) else
                 f"{_fmt(r['clip_acc_a'])} vs {_fmt(r['clip_acc_b'])}, z={_fmt(r['clip_z'], '.2f')}, "
                 + _p_is(r['clip_p'])),
        "mcnemar": ("—" if pd.isna(r.get("mcnemar_p")) else
                    f"b={int(r['mcnemar_b'])}, c={int(r['mcnemar_c'])}, " + _p_is(r['mcnemar_p'])),
        "paper": (f"{_fmt(r['paper_a'])} vs {_fmt(r['paper_b'])}, n={int(r['paper_n'])}: z={_fmt(r['paper_z'], '.2f')}, "
                  + _p_is(r['paper_p']) + f" ({'holds' if paper_holds else 'does not hold'})"),
        "paper_stratified": ("—" if pd.isna(r.get("paper_stratified_p")) else
                             f"clips {r['paper_n_by_device']} (n_eff = {_fmt(r['paper_n_eff'], '.0f')}): "
                             f"z={_fmt(r['paper_stratified_z'], '.2f')}, " + _p_is(r["paper_stratified_p"])
                             + f" ({'holds' if paper_strat else 'does not hold'})"),
    }


# --------------------------------------------------------------------------------------------- families

def _strategy(name: str) -> str:
    return T.STRATEGY_NAMES.get(name, name)


def comparison_name(comparison: str) -> str:
    """``"multi_task vs joint"`` -> ``"Multi-task vs Joint"`` (the strategies' display names)."""
    a, _, b = str(comparison).partition(" vs ")
    return f"{_strategy(a)} vs {_strategy(b)}" if b else str(comparison)


def _num(r: dict, key: str) -> float:
    v = r.get(key, math.nan)
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def family_test_record(r: dict) -> dict:
    """One seed-mean row of comparisons.csv for the templates: the deciding paired test with its
    Holm-adjusted p and verdict, the paper's z-test on the Avg and the device-stratified test beside it."""
    diff, p_holm, alternative = _num(r, "paired_diff"), _num(r, "p_holm"), str(r.get("alternative") or "greater")
    significant = _truth(r.get("significant"))
    if math.isnan(diff):
        verdict = "not tested (no Avg)"
    elif significant:
        verdict = ("a better" if diff > 0 else "b better") + f" (Holm p < {SIGNIFICANCE:g})"
    else:
        verdict = "no significant difference" if alternative == "two-sided" else "not significant"
    paper_p, better = _num(r, "p_avg"), _num(r, "avg_a") > _num(r, "avg_b")
    return {
        "table": r.get("table", ""), "family": r.get("family", ""), "row": r.get("row", ""),
        "comparison": comparison_name(r.get("comparison", "")), "scope": r.get("scope") or "all",
        "alternative": "two-sided" if alternative == "two-sided" else "one-sided",
        "seeds": _seeds_text(r.get("seeds")), "n": "" if pd.isna(r.get("n")) else int(r["n"]),
        "n_eff": _fmt(r.get("n_eff"), ".0f"), "avg_a": _fmt(r.get("avg_a")), "avg_b": _fmt(r.get("avg_b")),
        "diff": "—" if math.isnan(diff) else f"{diff:+.1f} ± {_fmt(r.get('paired_se'))}",
        "paired_p": _fmt_p(r.get("paired_p")), "p_holm": _fmt_p(p_holm), "significant": bool(significant),
        "verdict": verdict, "z_avg": _fmt(r.get("z_avg"), ".2f"), "p_avg": _fmt_p(paper_p),
        "paper_significant": bool(better and not math.isnan(paper_p) and paper_p < SIGNIFICANCE),
        "stratified_p": _fmt_p(r.get("stratified_p")),
    }


def seed_mean_rows(comparisons: pd.DataFrame | None) -> pd.DataFrame:
    """The seed-mean rows of comparisons.csv (``seed`` empty) that belong to a family."""
    if comparisons is None or comparisons.empty or "family" not in comparisons.columns:
        return pd.DataFrame()
    fam = comparisons["family"].fillna("").astype(str)
    return comparisons[comparisons["seed"].isna() & (fam != "")]


def family_section(comparisons: pd.DataFrame | None, family: str) -> dict:
    """A family's tests for the templates: its name, size ``m``, the tests significant after Holm and,
    uncorrected, by the paper's z-test on the Avg (one-sided tests, a better), and the records."""
    rows = seed_mean_rows(comparisons)
    rows = rows[rows["family"] == family] if len(rows) else rows
    records = [family_test_record(r) for r in rows.to_dict("records")] if len(rows) else []
    return {"family": family, "name": table_name(family) if family in ("table1", "table2", "table3", "table4")
            else family, "m": len(records), "n_significant": sum(r["significant"] for r in records),
            "n_paper_significant": sum(r["paper_significant"] for r in records if r["alternative"] == "one-sided"),
            "level": SIGNIFICANCE, "tests": records}


def statistics_section(comparisons: pd.DataFrame | None, claims: pd.DataFrame | None = None) -> dict:
    """The paper's claims (from claims.csv) and the families of Tables II and III, for the templates."""
    from caanet.stats import FAMILY_STATISTIC

    out = {"formula": ZTEST_FORMULA, "formula_tex": ZTEST_FORMULA_TEX, "n_explained": N_EXPLAINED,
           "paired_formula": PAIRED_FORMULA, "paired_formula_tex": PAIRED_FORMULA_TEX,
           "stratified_formula": STRATIFIED_FORMULA, "stratified_formula_tex": STRATIFIED_FORMULA_TEX,
           "paired_explained": PAIRED_EXPLAINED, "seeds_note": SEEDS_NOTE, "mcnemar_note": MCNEMAR_NOTE,
           "why": why_tests_differ(claims), "family_statistic": FAMILY_STATISTIC,
           "present": (comparisons is not None and len(comparisons) > 0) or (claims is not None and len(claims) > 0),
           "claims": [], "families": []}
    if claims is not None:
        out["claims"] = [claim_record(r) for r in claims.to_dict("records")]
    for table in ("table2", "table3"):
        section = family_section(comparisons, table)
        if section["m"]:
            out["families"].append(section)
    return out


def build(inp: ReportInputs) -> dict:
    return {"stats": statistics_section(inp.comparisons, inp.claims)}
