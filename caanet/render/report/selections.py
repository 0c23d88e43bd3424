"""The selections section: every choice that touches test labels, the numerics each cell ran in, and
what each model of a table's row trained on (like for like)."""

from __future__ import annotations

import pandas as pd

from caanet.render import tables as T
from caanet.render.report.fmt import table_name
from caanet.render.report.inputs import ReportInputs

ORACLE_NOTE = (
    "Teacher-forcing conditional training feeds the TRUE device label to the network at test time as well "
    "(as the paper and the authors' code do): it uses oracle information a deployed system does not have. "
    "Only multi-task conditional training (device predicted by CNN-d) is a fair comparison with the baselines."
)
WINNERS_CURSE = (
    "Each conditional cell of the strategy tables (Tables II and III, and IV where it runs) uses the "
    "conditioning layer Table I selected as the best of its "
    "four TEST accuracies (the paper's method). Choosing the best of four on the test set biases those "
    "conditional cells upwards (a winner's curse), so the comparisons with the single-device and joint "
    "baselines, and the tests, favour the conditional strategies. Set grid.layer_selection: validation "
    "to select the layer on a validation split instead."
)
CELL_KEYS = ["dataset", "cell_id", "seed"]


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


def _truthy(value) -> bool:
    return str(value).strip().lower() in ("true", "1", "1.0")


def bf16_note(table_cells: dict[str, pd.DataFrame]) -> str:
    """Which cells trained and evaluated under bf16 autocast (``cells.csv``'s ``bf16_autocast``), named
    per table: all of a table's cells, or each such cell and its seeds; float32 elsewhere."""
    frames = {t: df for t, df in table_cells.items() if df is not None and "bf16_autocast" in df.columns}
    if not frames or all(df["bf16_autocast"].isna().all() for df in frames.values()):
        return "Numerics: not recorded in cells.csv (bf16_autocast)."
    parts, any_bf16 = [], False
    for table, df in frames.items():
        cells = df.drop_duplicates(CELL_KEYS)
        bf16 = cells[cells["bf16_autocast"].map(_truthy)]
        if bf16.empty:
            continue
        any_bf16 = True
        if len(bf16) == len(cells):
            parts.append(f"{table_name(table)}: all {len(cells)} cells")
        else:
            seeds = bf16.groupby("cell_id", sort=False)["seed"].apply(lambda s: ", ".join(map(str, sorted(s))))
            parts.append(f"{table_name(table)}: {len(bf16)} of {len(cells)} cells ("
                         + "; ".join(f"{cid} seed {s}" for cid, s in seeds.items()) + ")")
    if not any_bf16:
        return "Numerics: float32 in every cell (no cell ran under bf16 autocast)."
    return ("Numerics: bf16 autocast on CUDA (a change of numerics, not of the method; normalisation and losses "
            "stay float32) in " + "; ".join(parts) + "; float32 in every other cell.")


def _clips(values: dict) -> str:
    return ", ".join(f"{d} {int(n)}" for d, n in values.items()) + f" ({int(sum(values.values()))})"


def training_data_rows(table_cells: dict[str, pd.DataFrame], reference_device: dict | None = None) -> list[dict]:
    """Per table and row (topology, pooling): what each model of the row trained on, from ``cells.csv``
    (``n_train_clips``/``n_validation_clips`` per device): a model is a strategy at its layer (Table I:
    each layer), a single-device model its cells together. ``same`` says whether every model of the row
    trained on the same clips per device in each seed (like for like); ``train``/``validation`` give
    the per-device counts (and total) where they agree, else ``detail`` lists each model's totals."""
    out = []
    for table, df in table_cells.items():
        if df is None or df.empty or "n_train_clips" not in df.columns or df["n_train_clips"].isna().all():
            continue
        df = df.assign(n_validation_clips=df["n_validation_clips"].fillna(0) if "n_validation_clips" in df.columns
                       else 0, _layer=df["cond_layer"].fillna(0).astype(int), device=df["device"].astype(str))
        df = df.dropna(subset=["n_train_clips"])
        for (topology, pooling), row in df.groupby(["topology", "pooling"], sort=False):
            per_model = {}
            for (strategy, layer, seed), g in row.groupby(["strategy", "_layer", "seed"], sort=False):
                train = dict(sorted(zip(g["device"], g["n_train_clips"].astype(int))))
                val = dict(sorted(zip(g["device"], g["n_validation_clips"].astype(int))))
                per_model[(strategy, layer, seed)] = (tuple(train.items()), tuple(val.items()))
            seeds = sorted({k[2] for k in per_model})
            same = all(len({v for k, v in per_model.items() if k[2] == s}) == 1 for s in seeds)
            distinct = set(per_model.values())
            models = sorted({k[:2] for k in per_model}, key=lambda m: (T.STRATEGIES.index(m[0])
                                                                        if m[0] in T.STRATEGIES else 99, m[1]))
            entry = {"table": table_name(table), "dataset": str(row["dataset"].iloc[0]),
                     "row": f"{T.TOPOLOGY_NAMES.get(topology, topology)} + {T.POOLING_NAMES.get(pooling, pooling)}",
                     "models": len(models), "seeds": len(seeds), "same": same,
                     "train": _clips(dict(next(iter(distinct))[0])) if len(distinct) == 1 else "differs",
                     "validation": _clips(dict(next(iter(distinct))[1])) if len(distinct) == 1 else "differs",
                     "reference": (reference_device or {}).get(str(row["dataset"].iloc[0]), ""), "detail": ""}
            if len(distinct) > 1:
                totals = []
                for strategy, layer in models:
                    vals = [v for k, v in per_model.items() if k[:2] == (strategy, layer)]
                    tr = sorted({sum(n for _, n in v[0]) for v in vals})
                    va = sorted({sum(n for _, n in v[1]) for v in vals})
                    name = T.STRATEGY_NAMES.get(strategy, strategy) + (f" L{layer}" if layer else "")
                    totals.append(f"{name} {'/'.join(map(str, tr))} trained, {'/'.join(map(str, va))} held out")
                entry["detail"] = "; ".join(totals)
            out.append(entry)
    return out


def build(inp: ReportInputs) -> dict:
    return {"selection_notes": selection_notes(inp.preset, inp.layers),
            "training_data": training_data_rows(inp.table_cells, inp.reference),
            "numerics_note": bf16_note(inp.table_cells),
            "oracle_note": ORACLE_NOTE}
