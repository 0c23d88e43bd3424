"""The selections section: every choice that touches test labels, and what each cell trained on."""

from __future__ import annotations

import math

import pandas as pd

from caanet.render import tables as T
from caanet.render.report.fmt import _fmt
from caanet.render.report.inputs import ReportInputs

ORACLE_NOTE = (
    "Teacher-forcing conditional training feeds the TRUE device label to the network at test time as well "
    "(as the paper and the authors' code do): it uses oracle information a deployed system does not have. "
    "Only multi-task conditional training (device predicted by CNN-d) is a fair comparison with the baselines."
)
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


def build(inp: ReportInputs) -> dict:
    return {"selection_notes": selection_notes(inp.preset, inp.layers),
            "training_data": training_data_rows(inp.cells, inp.reference),
            "oracle_note": ORACLE_NOTE}
