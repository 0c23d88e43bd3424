"""The regenerated paper: one self-contained HTML page, a LaTeX article, and its PDF.

:func:`build_context` gathers everything from result FILES (table summaries, the statistics CSV,
rendered tables, figure PNG/PDFs, Snakemake benchmark TSVs) plus provenance (preset, datasets and
whether they are synthetic, seeds, fidelity, software versions, git commit, date) into one plain
dict. :func:`render_report_html` and :func:`render_report_tex` fill the Jinja2 templates in
``caanet/render/templates``; :func:`build_pdf` compiles the LaTeX with ``latexmk`` (or ``pdflatex``
twice) and returns a message instead of raising when LaTeX is absent, so the HTML still builds.

The paper's two significance claims are rendered from ``results/stats/claims.csv``
(:func:`caanet.stats.run_claims`: the paper's z-test on the Avg decides; the clip-level z-test and
McNemar's paired test are shown beside it, labelled). Every selection that touches test labels (the
layer selection of Table I, the lambda rule's source, model selection, teacher forcing's oracle
device) and what each cell trained on (``cells.csv``: training and held-out validation clips per
device) are stated, computed from the preset and the result files.

The "do the paper's claims hold here?" paragraph is computed, never written by hand: for each
conditional strategy against each baseline, the rows of Tables II/III where ours is higher on
device B, device C and the average, next to the same count from the paper's own numbers, and how
many of the per-row one-tailed z-tests of ``comparisons.csv`` are significant.
"""

from __future__ import annotations

import base64
import datetime as _dt
import math
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

import jinja2
import numpy as np
import pandas as pd

from caanet import grid
from caanet import paths as rpaths
from caanet.errors import ResultsError
from caanet.io import atomic_path, read_results_csv, write_text_atomic
from caanet.render import tables as T
from caanet.spec import CellSpec

TABLE_TITLES = {
    "table1": "Table I: teacher-forcing conditioning at each layer (average over devices A, B, C)",
    "table2": "Table II: the four training strategies (DCASE 2018 in the paper)",
    "table3": "Table III: the four training strategies (DCASE 2019 in the paper)",
    "table4": "Table IV (beyond the paper): five training strategies with seen and unseen devices",
}
FIGURES = (
    ("fig5_layers", "Fig. 5: accuracy per device and conditioning layer",
     "Teacher-forcing cells of Table I; one panel per topology and pooling; bars are devices A, B, C."),
    ("fig6_confusion", "Fig. 6: confusion matrices of the best multi-task model",
     "Rows are the true scenes (normalised per row), columns the predicted ones; numbers are clip counts."),
    ("fig7_attention", "Fig. 7: attention heat maps per class and device",
     "Attention of the true class of the multi-task CAA-Net; the same clip recorded by each device where "
     "the dataset has parallel recordings. Time runs left to right, mel bands bottom to top."),
    ("training_curves", "Training curves",
     "Loss, learning rate, λ of Eq. (2) and the device accuracy of CNN-d against the iteration, per cell."),
)
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
ORACLE_NOTE = (
    "Teacher-forcing conditional training feeds the TRUE device label to the network at test time as well "
    "(as the paper and the authors' code do): it uses oracle information a deployed system does not have. "
    "Only multi-task conditional training (device predicted by CNN-d) is a fair comparison with the baselines."
)
BEYOND_PAPER_NOTE = (
    "Table IV goes beyond the paper: the paper has no such table, so there are no paper values to compare "
    "with. It answers two questions the paper leaves open: how the strategies fare with more devices, some "
    "of them never seen in training (the DCASE 2020 Task 1A setting), and whether learning the multi-task "
    "weight λ of Eq. (2) by homoscedastic uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018; the "
    "paper's future work) helps compared with the paper's switched λ. Its conditional strategies use the "
    "conditioning layer Table I selected for the same row, as Table III does, so the layer selection note "
    "below applies to them too."
)
CLAIM_TESTS = (("teacher_forcing", "single_device"), ("teacher_forcing", "joint"),
               ("multi_task", "single_device"), ("multi_task", "joint"))
SIGNIFICANCE = 0.05
TEMPLATES = Path(__file__).resolve().parent / "templates"


# --------------------------------------------------------------------------------------------- provenance

def dataset_entries(preset: dict) -> list[dict]:
    """One entry per dataset the tables use: name, source, synthetic (source ``embedded``), devices, tables."""
    datasets = preset.get("datasets") or {}
    tables = preset.get("tables") or {}
    out = []
    for name in sorted(datasets):
        d = datasets[name] or {}
        source = d.get("source", "unknown")
        out.append({
            "name": name,
            "source": source,
            "synthetic": source == "embedded",
            "devices": ", ".join(map(str, d.get("devices") or [])),
            "clip_seconds": d.get("clip_seconds"),
            "tables": ", ".join(t for t in sorted(tables) if (tables[t] or {}).get("dataset") == name),
        })
    return out


def synthetic_statement(datasets: list[dict]) -> str:
    """A plain sentence naming the synthetic datasets ('' when every dataset is real)."""
    synth = [d["name"] for d in datasets if d["synthetic"]]
    if not synth:
        return ""
    names = ", ".join(synth)
    return (
        f"The dataset(s) {names} are SYNTHETIC: generated by caanet's embedded generator (procedural scene "
        "textures through simulated devices), not the DCASE recordings. The numbers below show that the "
        "pipeline runs and what it measures on that data; they do not test the paper's claims about real "
        "devices, and their agreement or disagreement with the paper's values means little."
    )


def provenance(preset: dict, *, versions: dict | None = None, commit: str | None = None,
               date: str | None = None, repo_dir=None) -> dict:
    """Preset, datasets, seeds, fidelity, software versions, git commit and date."""
    from caanet import provenance as prov

    datasets = dataset_entries(preset)
    seeds_by = preset.get("seeds_by_pooling") or {}
    return {
        "preset": preset.get("name", "unknown"),
        "fidelity": preset.get("fidelity", "paper"),
        "seeds": ", ".join(map(str, preset.get("seeds") or [0])),
        "seeds_by_pooling": "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in sorted(seeds_by.items())),
        "datasets": datasets,
        "synthetic": any(d["synthetic"] for d in datasets),
        "synthetic_statement": synthetic_statement(datasets),
        "versions": versions if versions is not None else prov.software_versions(),
        "git_commit": commit if commit is not None else prov.git_commit(repo_dir),
        "date": date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --------------------------------------------------------------------------------------------- statistics

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


def read_comparisons(path) -> pd.DataFrame:
    """Read ``results/stats/comparisons.csv`` and check its columns."""
    empty = pd.DataFrame(columns=["table", "comparison", "row", "model_a", "model_b", "seed", "n", "acc_a", "acc_b",
                                  "z", "p_z", "mcnemar_b", "mcnemar_c", "mcnemar_p", "method", "paper_claim"])
    df = read_results_csv(path, "the comparisons", empty=empty, keep_default_na=True,
                          columns=["table", "comparison", "row", "model_a", "model_b", "n", "acc_a", "acc_b", "z", "p_z"])
    if df is empty:
        return df
    df["paper_claim"] = df.get("paper_claim", pd.Series([""] * len(df))).fillna("").astype(str)
    return df


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


# --------------------------------------------------------------------------------------------- the paper's claims

def read_claims(path) -> pd.DataFrame:
    """Read ``results/stats/claims.csv`` and check its columns (:data:`caanet.stats.CLAIM_COLUMNS`)."""
    from caanet.stats import CLAIM_COLUMNS

    return read_results_csv(path, "the claims", columns=CLAIM_COLUMNS)


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


def _p_is(p) -> str:
    """``p=0.0082`` or ``p<0.0001`` (no ``p=<``)."""
    text = _fmt_p(p)
    return f"p{text.replace(' ', '')}" if text.startswith("<") else f"p={text}"


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


# --------------------------------------------------------------------------------------------- disclosure

WINNERS_CURSE = (
    "Each conditional row of Tables II and III uses the conditioning layer Table I selected as the best of its "
    "four TEST accuracies (the paper's method). Choosing the best of four on the test set biases those "
    "conditional cells upwards (a winner's curse), so the comparisons with the single-device and joint "
    "baselines, and the z-tests, favour the conditional strategies. Set grid.layer_selection: validation "
    "to select the layer on a validation split instead."
)


def selection_notes(preset: dict, layers: list[dict]) -> list[str]:
    """Plain sentences: every selection that touches test labels, and what was chosen here."""
    from caanet.fidelity import lambda_source

    training = preset.get("training") or {}
    on = {r.get("selected_on", "test") for r in layers} or {(preset.get("grid") or {}).get("layer_selection", "test")}
    notes = []
    if "test" in on:
        notes.append("Layer selection: on the test set (the paper's method). " + WINNERS_CURSE)
    else:
        notes.append("Layer selection: on a validation split held out of Table I's training data (leak-free); "
                     "the paper selected on the test set.")
    source = lambda_source(preset.get("fidelity", "paper"), training.get("lambda_on"))
    notes.append(
        f"λ of Eq. (2): switched on CNN-d's device accuracy on the {source.upper()} "
        + ("split, as the paper's text and the authors' code do: test labels steer the multi-task training."
           if source == "test" else
           "split carved from the training data (a deliberate, leak-free departure from the paper's text, "
           "which uses the test subset; training.lambda_on: test follows the text)."))
    notes.append("Model selection: " + ("the weights with the best validation accuracy (training.selection: best_val)."
                                        if training.get("selection") == "best_val" else
                                        "the weights after the last iteration (as the paper and the authors' code)."))
    notes.append("Figs. 6 and 7 show each model at its seed with the best Avg (named in the figure), as the paper "
                 "shows \"the best result\"; the tables show the mean over seeds.")
    return notes


def training_data_rows(cells_df: pd.DataFrame | None, reference_device: dict | None = None) -> list[dict]:
    """Per dataset, strategy and device: the training clips and the held-out validation clips of its
    cells (a range where cells differ) and the held-out share, from ``cells.csv``."""
    if cells_df is None or cells_df.empty or "n_train_clips" not in cells_df.columns:
        return []
    df = cells_df.dropna(subset=["n_train_clips"])
    out = []

    def span(values) -> str:
        lo, hi = int(values.min()), int(values.max())
        return f"{lo}" if lo == hi else f"{lo}–{hi}"

    for (ds, strategy, device), g in df.groupby(["dataset", "strategy", "device"], sort=False):
        val = g["n_validation_clips"].fillna(0)
        total = g["n_train_clips"] + val
        share = 100.0 * float((val / total).mean()) if (total > 0).all() else math.nan
        out.append({"dataset": ds, "strategy": T.STRATEGY_NAMES.get(strategy, strategy), "device": str(device),
                    "reference": bool(reference_device and reference_device.get(ds) == str(device)),
                    "train": span(g["n_train_clips"]), "validation": span(val), "share": _fmt(share),
                    "cells": int(g[["cell_id", "seed"]].drop_duplicates().shape[0])})
    return out


# --------------------------------------------------------------------------------------------- claims

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


# --------------------------------------------------------------------------------------------- compute

def read_benchmark(path) -> dict:
    """Sum a Snakemake benchmark TSV (several rows when a job was repeated): wall ``s`` and ``cpu_time``."""
    try:
        df = pd.read_csv(path, sep="\t")
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ResultsError(f"{path}: cannot read the benchmark file: {exc}") from exc
    missing = [c for c in ("s", "cpu_time") if c not in df.columns]
    if missing:
        raise ResultsError(f"{path}: benchmark file lacks column(s) {missing} (has {list(df.columns)})")
    return {"s": float(pd.to_numeric(df["s"], errors="coerce").fillna(0).sum()),
            "cpu_time": float(pd.to_numeric(df["cpu_time"], errors="coerce").fillna(0).sum())}


def table_cell_ids(summary: pd.DataFrame) -> set[str]:
    """The cell ids a table summary was aggregated from (single-device rows: one cell per device)."""
    ids = set()
    devices = sorted(set(summary["device"]) - set(grid.SUMMARY_DEVICES))
    for r in summary.drop_duplicates(["topology", "pooling", "strategy", "cond_layer"]).to_dict("records"):
        layer = None if pd.isna(r["cond_layer"]) else int(r["cond_layer"])
        common = dict(dataset="x", topology=r["topology"], pooling=r["pooling"], strategy=r["strategy"], cond_layer=layer)
        if r["strategy"] == "single_device":
            ids.update(CellSpec(**common, device=d).cell_id for d in devices)
        else:
            ids.add(CellSpec(**common).cell_id)
    return ids


def _benchmark_tokens(path: Path) -> set[str]:
    tokens = set(path.parts)
    stem = path.name.split(".")[0]
    tokens.add(stem)
    tokens.add(re.sub(r"[._-]?seed\d+$", "", stem))
    return tokens


def compute_cost(summaries: dict[str, pd.DataFrame], benchmark_paths) -> list[dict]:
    """Wall and CPU time summed from benchmark files, per table and for the other jobs.

    A benchmark file belongs to a table when one of its path components (or its file name without a
    ``seedN`` suffix) is a cell id of the table and the table's dataset appears in its path (as
    ``benchmarks/train_cell/{dataset}/{cell_id}/seed{n}.tsv``). Cells shared by tables (Table I's
    teacher-forcing cells reused in Table II) count in each.
    """
    paths = [Path(p) for p in benchmark_paths]
    if not paths:
        return []
    costs = {p: read_benchmark(p) for p in paths}
    assigned: set[Path] = set()
    rows = []
    for table in ("table1", "table2", "table3", "table4"):
        if table not in summaries:
            continue
        summary = summaries[table]
        ids = table_cell_ids(summary)
        datasets = set(summary["dataset"].astype(str)) if "dataset" in summary.columns else set()
        mine = [p for p in paths if _benchmark_tokens(p) & ids and (not datasets or datasets & set(p.parts))]
        assigned.update(mine)
        rows.append(_cost_row(TABLE_TITLES[table].split(":")[0], mine, costs))
    other = [p for p in paths if p not in assigned]
    if other:
        rows.append(_cost_row("Other jobs (data, features, aggregation, rendering)", other, costs))
    return rows


def _cost_row(label: str, paths: list[Path], costs: dict) -> dict:
    wall = sum(costs[p]["s"] for p in paths)
    cpu = sum(costs[p]["cpu_time"] for p in paths)
    return {"label": label, "jobs": len(paths), "wall_s": wall, "cpu_s": cpu,
            "wall": _hms(wall), "cpu": _hms(cpu)}


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# --------------------------------------------------------------------------------------------- context

def _as_paths(obj) -> list[Path]:
    if obj is None:
        return []
    if isinstance(obj, (str, os.PathLike)):
        p = Path(obj)
        return sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    return [Path(p) for p in obj]


def _find(paths: list[Path], name: str) -> Path | None:
    hits = [p for p in paths if p.name == name]
    return hits[0] if hits else None


def figure_entries(figure_paths) -> list[dict]:
    """The figures of :data:`FIGURES` found among ``figure_paths``: base64 PNG and the PDF's path."""
    paths = _as_paths(figure_paths)
    out = []
    for stem, title, caption in FIGURES:
        png, pdf = _find(paths, stem + ".png"), _find(paths, stem + ".pdf")
        if png is None or not png.exists():
            continue
        out.append({"key": stem, "title": title, "caption": caption,
                    "png_b64": base64.b64encode(png.read_bytes()).decode("ascii"),
                    "pdf": str(pdf.resolve()) if pdf is not None and pdf.exists() else None})
    return out


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
    the seen and unseen devices (``unseen``: the dataset's ``unseen_devices``), the unseen-device policy per strategy (:func:`unseen_policies`), and
    its tests of conditional vs joint training from ``comparisons.csv`` (:data:`caanet.stats.TABLE4_STATISTIC`,
    one-tailed, significant at :data:`SIGNIFICANCE`). None without Table IV."""
    from caanet.stats import TABLE4_STATISTIC

    if entry is None or summary is None or summary.empty:
        return None
    devices = sorted(set(summary["device"]) - set(grid.SUMMARY_DEVICES))
    tests = []
    if comparisons is not None and len(comparisons):
        tests = [_comparison_record(r) for r in comparisons[comparisons["table"] == "table4"].to_dict("records")]
    return {**entry, "note": BEYOND_PAPER_NOTE,
            "seen": ", ".join(d for d in devices if d not in set(unseen)) or "—",
            "unseen": ", ".join(d for d in devices if d in set(unseen)) or "—",
            "policies": unseen_policies(cells_df, entry["dataset"]),
            "statistic": TABLE4_STATISTIC, "tests": tests,
            "n_significant": sum(t["holds"] for t in tests), "level": SIGNIFICANCE}


def _table5(preset: dict, summaries_given: dict, results_dir, comparisons) -> dict | None:
    """Table V's section (:func:`caanet.render.field.table5_section`) from ``table5.csv`` when given or found."""
    from caanet.render import field

    path = _result_file(summaries_given.get(Path(rpaths.TABLE.format(n=5)).name), results_dir, rpaths.TABLE, n=5)
    summary = field.read_table5(path) if path is not None and path.exists() else None
    return field.table5_section(preset, summary, comparisons)


def _result_file(given, results_dir, template: str, **fields) -> Path | None:
    """``given``, else ``template``'s file under ``results_dir`` (:mod:`caanet.paths`), else None."""
    if given is not None:
        return Path(given)
    return None if results_dir is None else Path(rpaths.results_file(template, results_dir, **fields))


def build_context(*, preset: dict, results_dir=None, summaries=None, layers_csv=None, cells_csv=None,
                  tables_dir=None, figures=None, stats_csv=None, claims_csv=None, benchmarks=None,
                  versions: dict | None = None, commit: str | None = None, date: str | None = None,
                  repo_dir=None) -> dict:
    """Collect everything the report shows, from the files named.

    ``preset``: the resolved preset (``caanet.config.resolve``). The result files
    (:mod:`caanet.paths`): ``summaries``, the ``table{n}.csv`` files; ``layers_csv`` (``layers.csv``),
    ``cells_csv`` (``cells.csv``, the clip counts per cell), ``stats_csv`` (``comparisons.csv``),
    ``claims_csv`` (``claims.csv``) and ``benchmarks`` (a folder or list of TSVs). Each one not given
    is looked up at its place under ``results_dir`` when that is given (a results tree, for tests and
    by-hand use); the workflow names every file (its declared inputs) and no ``results_dir``. A table
    missing from both is a warning in the report, not an error.
    ``tables_dir``: a folder or list of rendered ``table{n}.html``/``.tex`` files (re-rendered from the
    summaries where absent). ``figures``: a folder or list of figure PNG/PDFs.
    ``versions``/``commit``/``date`` override the gathered provenance (tests, reproducible builds).
    """
    warnings = []
    summaries_given = {p.name: p for p in _as_paths(summaries)}
    summaries: dict[str, pd.DataFrame] = {}
    has_table4 = "table4" in (preset.get("tables") or {})
    for n in (1, 2, 3, 4):
        if n == 4 and not has_table4:
            continue   # an optional table: table4.csv holds only its header without tables.table4
        name = Path(rpaths.TABLE.format(n=n)).name
        path = _result_file(summaries_given.get(name), results_dir, rpaths.TABLE, n=n)
        if path is not None and path.exists():
            summaries[f"table{n}"] = T.read_summary(path)
        else:
            warnings.append(f"{path or name} is missing: Table {n} is not shown")
    rendered = _as_paths(tables_dir)
    table_entries = []
    for key, summary in summaries.items():
        html_file, tex_file = _find(rendered, f"{key}.html"), _find(rendered, f"{key}.tex")
        ds = summary["dataset"].iloc[0] if "dataset" in summary.columns and len(summary) else "?"
        table_entries.append({
            "key": key, "title": TABLE_TITLES[key], "dataset": ds,
            "html": html_file.read_text(encoding="utf-8") if html_file and html_file.exists()
            else T.render_html(summary, key, caption=T.table_caption(key, summary)),
            "latex": tex_file.read_text(encoding="utf-8") if tex_file and tex_file.exists()
            else T.render_latex(summary, key, caption=T.table_caption(key, summary), label=f"tab:{key}"),
            "wide": key != "table1",
        })
    table4_entry = next((t for t in table_entries if t["key"] == "table4"), None)
    table_entries = [t for t in table_entries if t["key"] != "table4"]
    layers_csv = _result_file(layers_csv, results_dir, rpaths.LAYERS)
    layers = pd.read_csv(layers_csv).to_dict("records") if layers_csv and layers_csv.exists() else []
    stats_path = _result_file(stats_csv, results_dir, rpaths.COMPARISONS)
    comparisons = read_comparisons(stats_path) if stats_path and stats_path.exists() else None
    if comparisons is None:
        warnings.append(f"{stats_path or 'comparisons.csv'} is missing: no significance tests")
    claims_path = _result_file(claims_csv, results_dir, rpaths.CLAIMS)
    claims_df = read_claims(claims_path) if claims_path and claims_path.exists() else None
    if claims_df is None:
        warnings.append(f"{claims_path or 'claims.csv'} is missing: the paper's claims are not judged")
    cells_csv = _result_file(cells_csv, results_dir, rpaths.CELLS)
    cells_df = pd.read_csv(cells_csv, dtype={"device": str}) if cells_csv and cells_csv.exists() else None
    reference = grid.reference_devices(preset) if preset.get("datasets") else {}
    unseen = grid.unseen_devices(preset) if preset.get("datasets") else {}
    claims = qualitative_claims(summaries, comparisons)
    if benchmarks is None and results_dir is not None:
        benchmarks = Path(results_dir) / Path(rpaths.BENCHMARKS).relative_to(rpaths.RESULTS)
    bench = _as_paths(benchmarks)
    bench = [p for p in bench if p.suffix == ".tsv" and p.exists()]
    return {
        "title": "CAA-Net: Conditional Atrous CNNs with Attention for Explainable Device-robust Acoustic "
                 "Scene Classification, regenerated",
        "paper": "Z. Ren, Q. Kong, J. Han, M. D. Plumbley, B. W. Schuller, IEEE Transactions on Multimedia, 2020",
        "provenance": provenance(preset, versions=versions, commit=commit, date=date, repo_dir=repo_dir),
        "tables": table_entries,
        "layers": [{"row": f"{T.TOPOLOGY_NAMES.get(r['topology'], r['topology'])} + "
                           f"{T.POOLING_NAMES.get(r['pooling'], r['pooling'])}",
                    "layer": int(r["cond_layer"]), "acc": _fmt(r.get("acc_mean")),
                    "on": r.get("selected_on", "test")} for r in layers],
        "stats": statistics_section(comparisons, claims_df),
        "selection_notes": selection_notes(preset, layers),
        "training_data": training_data_rows(cells_df, reference),
        "reference_devices": ", ".join(f"{k}: {v}" for k, v in sorted(reference.items())),
        "claims": claims,
        "claims_sentences": claims_sentences(claims),
        "best_sentences": [s for s in (best_strategy_sentence(summaries[t], t) for t in ("table2", "table3")
                                       if t in summaries) if s],
        "oracle_note": ORACLE_NOTE,
        "table4": table4_section(table4_entry, summaries.get("table4"), cells_df, comparisons,
                                 unseen.get(table4_entry["dataset"], ()) if table4_entry else ()),
        "table5": _table5(preset, summaries_given, results_dir, comparisons),  # Table V: caanet.render.field
        "figures": figure_entries(figures),
        "compute": compute_cost(summaries, bench),
        "warnings": warnings,
    }


# --------------------------------------------------------------------------------------------- rendering

def _html_env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _tex_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=False, undefined=jinja2.StrictUndefined,
        block_start_string=r"\BLOCK{", block_end_string="}", variable_start_string=r"\VAR{",
        variable_end_string="}", comment_start_string=r"\#{", comment_end_string="}",
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["e"] = T.latex_escape
    return env


def render_report_html(context: dict, out_html) -> None:
    """Write the self-contained HTML report (figures embedded as base64 PNG, inline CSS)."""
    text = _html_env().get_template("report.html.j2").render(**context)
    write_text_atomic(out_html, text)


def render_report_tex(context: dict, out_tex) -> None:
    """Write the LaTeX article; figures are included from their PDFs, relative to ``out_tex``."""
    out_tex = Path(out_tex)
    figures = []
    for f in context["figures"]:
        if f.get("pdf"):
            rel = os.path.relpath(f["pdf"], out_tex.parent.resolve()).replace(os.sep, "/")
            figures.append(dict(f, pdf_rel=rel))
    text = _tex_env().get_template("report.tex.j2").render(**dict(context, figures=figures))
    write_text_atomic(out_tex, text)


def latex_command() -> list[str] | None:
    """``latexmk -pdf`` if available, else ``pdflatex``; None when neither is on PATH."""
    if shutil.which("latexmk"):
        return ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error"]
    if shutil.which("pdflatex"):
        return ["pdflatex", "-interaction=nonstopmode", "-halt-on-error"]
    return None


def build_pdf(tex_path, out_pdf, *, timeout: int = 300) -> str | None:
    """Compile ``tex_path`` to ``out_pdf``; return None on success, else a message saying why not.

    Runs in the .tex file's folder (so relative figure paths resolve) with the auxiliary files in a
    temporary folder; ``pdflatex`` runs twice when ``latexmk`` is absent. No LaTeX on PATH, a failed
    compile or a timeout return a message (with the log's tail) instead of raising.
    """
    tex_path = Path(tex_path).resolve()
    cmd = latex_command()
    if cmd is None:
        return ("LaTeX is not installed (neither latexmk nor pdflatex is on PATH): the PDF report was not "
                "built; the HTML report is complete. Install texlive-latex-base, texlive-latex-recommended "
                "and latexmk for the PDF.")
    with tempfile.TemporaryDirectory(prefix="caanet-latex-") as tmp:
        runs = 1 if cmd[0] == "latexmk" else 2
        for _ in range(runs):
            try:
                proc = subprocess.run(cmd + [f"-output-directory={tmp}", tex_path.name], cwd=tex_path.parent,
                                      capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                return f"LaTeX ({cmd[0]}) did not finish within {timeout} s on {tex_path}: the PDF was not built."
            if proc.returncode != 0:
                log = Path(tmp) / (tex_path.stem + ".log")
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else proc.stdout[-3000:]
                return f"LaTeX ({cmd[0]}) failed on {tex_path} (exit {proc.returncode}); log tail:\n{tail}"
        built = Path(tmp) / (tex_path.stem + ".pdf")
        if not built.exists():
            return f"LaTeX ({cmd[0]}) ran on {tex_path} but wrote no PDF."
        with atomic_path(out_pdf) as target:
            shutil.copyfile(built, target)
    return None
