"""Figures 5-7 of the paper and the training curves (matplotlib, Agg; PNG and PDF each).

* :func:`fig5_layers` - Fig. 5: accuracy per device and conditioning layer, one panel per
  topology x pooling (Table I's teacher-forcing cells only, :func:`table1_cells`; mean over seeds,
  std as error bars).
* :func:`fig6_confusion` - Fig. 6: row-normalised confusion matrices per device of one model,
  counts annotated. The workflow picks the model (:func:`caanet.workflow_support.figure_cells`):
  Table II's multi-task row with the best Avg, at its selected layer, at the seed with the best Avg
  (:func:`caanet.aggregate.best_seed`).
* :func:`fig7_attention` - Fig. 7: attention maps of the true class, one row per scene and one
  column per device, preferring one clip recorded in parallel by all devices (the same filename
  stem without the trailing ``-{device}``); time on x, mel on y, origin lower.
* :func:`training_curves` - loss, learning rate, lambda and device accuracy per cell.

Figures are built on :class:`matplotlib.figure.Figure` (no pyplot state), with a distinct colour
per device (:func:`device_colours`, fixed for A, B, C), and written atomically as ``{out_stem}.png`` and ``{out_stem}.pdf``. Missing optional data
(no parallel clips, no device accuracy, no seeds beyond one) is shown as what exists and said so in
the title; malformed inputs raise :class:`caanet.errors.ResultsError` naming the file and key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from caanet import aggregate
from caanet.errors import ResultsError
from caanet.io import TEXT_ENCODING, atomic_path, read_results_csv, require_columns
from caanet.render.tables import POOLING_NAMES, TOPOLOGY_NAMES
from caanet.spec import POOLINGS, TOPOLOGIES
from caanet.vocab import STRATEGY_REGISTRY, SUMMARY_DEVICES

DEVICE_COLOURS = {"a": "#1b6ca8", "b": "#e07b00", "c": "#3a9a3a"}
"""The paper's devices keep their colours in every figure."""
_MORE_COLOURS = ("#8e44ad", "#c0392b", "#7f8c8d", "#16a085", "#d4ac0d", "#d63384", "#7f5539", "#17becf",
                 "#a3a500", "#343a40", "#ff7f7f", "#6f42c1")
"""The colours of other devices, in order; beyond them, evenly spread hues (:func:`device_colours`)."""
CURVE_COLOURS = ("#1b6ca8", "#e07b00", "#3a9a3a", "#c0392b", "#8e44ad", "#7f5539", "#d63384", "#6c757d",
                 "#a3a500", "#17becf")
MAX_LEGEND = 12


# --------------------------------------------------------------------------------------------- helpers

def device_order(devices) -> list[str]:
    """Devices with ``a, b, c`` first (the paper's order), then any others sorted."""
    devices = [str(d) for d in dict.fromkeys(devices)]
    return [d for d in DEVICE_COLOURS if d in devices] + sorted(d for d in devices if d not in DEVICE_COLOURS)


def device_colours(devices) -> dict[str, str]:
    """A distinct colour for each of ``devices`` (any number): ``a``, ``b``, ``c`` their fixed ones
    (:data:`DEVICE_COLOURS`), the others in :func:`device_order` from :data:`_MORE_COLOURS`, then hues
    spread by the golden ratio (saturation and value alternating), skipping any colour already taken."""
    from matplotlib.colors import hsv_to_rgb, to_hex

    order = device_order(devices)
    out = {d: DEVICE_COLOURS[d] for d in order if d in DEVICE_COLOURS}
    used = set(DEVICE_COLOURS.values())
    palette = iter(c for c in _MORE_COLOURS if c not in used)
    k = 0
    for d in order:
        if d in out:
            continue
        colour = next(palette, None)
        while colour is None or colour in used:
            hue = (0.11 + 0.618033988749895 * k) % 1.0
            colour = to_hex(hsv_to_rgb((hue, 0.85 - 0.3 * (k // 8 % 2), 0.8 - 0.25 * (k // 16 % 2))))
            k += 1
        out[d] = colour
        used.add(colour)
    return out


def save_figure(fig: Figure, out_stem) -> list[Path]:
    """Write ``{out_stem}.png`` (150 dpi) and ``{out_stem}.pdf`` atomically; return both paths."""
    out_stem = Path(out_stem)
    paths = []
    for fmt, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "Producer": None})):
        target = out_stem.with_name(out_stem.name + "." + fmt)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, metadata=meta, bbox_inches="tight", pad_inches=0.1)
        paths.append(target)
    return paths


def _placeholder(out_stem, title: str, message: str) -> list[Path]:
    fig = Figure(figsize=(6, 2.5))
    ax = fig.add_subplot()
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return save_figure(fig, out_stem)


def _read_frame(obj, what: str) -> tuple[pd.DataFrame, str]:
    if isinstance(obj, pd.DataFrame):
        return obj.copy(), what
    return read_results_csv(obj, what), str(obj)


# --------------------------------------------------------------------------------------------- Fig. 5

def table1_cells(cells_df, preset) -> pd.DataFrame:
    """Fig. 5's cells: Table I's rows of ``cells.csv`` (a path or frame), selected by
    :func:`caanet.aggregate.table_cells_frame` (its dataset, cells and seeds; no other table's)."""
    df, source = _read_frame(cells_df, "cells.csv")
    require_columns(df, ["dataset", "cell_id", "seed"], source)
    df = df.astype({"dataset": str, "cell_id": str, "seed": "int64"})
    return aggregate.table_cells_frame(df, preset, "table1")


def fig5_layers(cells_df, out_stem, *, strategy: str = "teacher_forcing") -> list[Path]:
    """Fig. 5: accuracy [%] per device at each conditioning layer, one panel per topology x pooling.

    ``cells_df`` holds Table I's rows of ``results/tables/cells.csv`` (a path or frame; one row per
    cell, seed, device; :func:`table1_cells` selects them). Bars are the mean over seeds, error bars
    the std over seeds (where more than one seed ran).
    """
    df, source = _read_frame(cells_df, "cells.csv")
    require_columns(df, ["topology", "pooling", "strategy", "cond_layer", "device", "seed", "accuracy"], source)
    df = df[(df["strategy"] == strategy) & df["cond_layer"].notna()]
    df = df[~df["device"].astype(str).isin(SUMMARY_DEVICES)]
    if df.empty:
        return _placeholder(out_stem, "Fig. 5: accuracy per conditioning layer", f"no {strategy} cells yet")
    df = df.assign(device=df["device"].astype(str), cond_layer=df["cond_layer"].astype(int),
                   accuracy=pd.to_numeric(df["accuracy"], errors="coerce"))
    stats = df.groupby(["topology", "pooling", "cond_layer", "device"])["accuracy"].agg(["mean", "std", "count"])
    devices = device_order(df["device"])
    colours = device_colours(devices)
    layers = sorted(df["cond_layer"].unique())
    by_topology = {t: [p for p in POOLINGS if ((df["topology"] == t) & (df["pooling"] == p)).any()] for t in TOPOLOGIES}
    by_topology = {t: ps for t, ps in by_topology.items() if ps}
    n_rows, n_cols = len(by_topology), max(len(ps) for ps in by_topology.values())
    fig = Figure(figsize=(2.6 * n_cols + 0.6, 2.3 * n_rows + 0.9), layout="constrained")
    axes = fig.subplots(n_rows, n_cols, squeeze=False, sharey=True)
    width = 0.8 / len(devices)
    seeds = int(df.groupby(["topology", "pooling", "cond_layer", "device"])["seed"].nunique().max())
    for i, (topology, poolings) in enumerate(by_topology.items()):
        for j in range(n_cols):
            ax = axes[i, j]
            if j >= len(poolings):
                ax.axis("off")
                continue
            pooling = poolings[j]
            for k, dev in enumerate(devices):
                rows = [stats.loc[(topology, pooling, l, dev)] if (topology, pooling, l, dev) in stats.index else None
                        for l in layers]
                mean = [np.nan if r is None else r["mean"] for r in rows]
                err = [np.nan if r is None or r["count"] < 2 else r["std"] for r in rows]
                x = np.arange(len(layers)) + (k - (len(devices) - 1) / 2) * width
                ax.bar(x, mean, width, yerr=None if seeds < 2 else err, capsize=2, label=f"Device {dev.upper()}",
                       color=colours[dev])
            ax.set_title(f"{TOPOLOGY_NAMES[topology]}, {POOLING_NAMES[pooling]}", fontsize=9)
            ax.set_xticks(np.arange(len(layers)), [f"L{l}" for l in layers])
            ax.set_ylim(0, 100)
            ax.grid(axis="y", alpha=0.3)
            if j == 0:
                ax.set_ylabel("Accuracy [%]")
            if i == n_rows - 1:
                ax.set_xlabel("conditioning layer")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=len(devices), fontsize=8)
    note = f"mean of {seeds} seeds, error bars: std" if seeds > 1 else "one seed"
    dataset = ", ".join(sorted(set(df["dataset"].astype(str)))) if "dataset" in df.columns else ""
    fig.suptitle(f"Fig. 5: {strategy.replace('_', ' ')} conditioning at each layer"
                 + (f", {dataset}" if dataset else "") + f" ({note})", fontsize=10)
    return save_figure(fig, out_stem)


# --------------------------------------------------------------------------------------------- Fig. 6

def load_evaluation(evaluation_json) -> tuple[dict, str]:
    """Read an ``evaluation.json`` (a path or an already-loaded dict) and check its keys."""
    if isinstance(evaluation_json, dict):
        ev, source = evaluation_json, "evaluation.json"
    else:
        source = str(evaluation_json)
        try:
            ev = json.loads(Path(evaluation_json).read_text(encoding=TEXT_ENCODING))
        except (OSError, json.JSONDecodeError) as exc:
            raise ResultsError(f"{source}: cannot read: {exc}") from exc
    for key in ("scene_labels", "per_device"):
        if key not in ev:
            raise ResultsError(f"{source}: missing key {key!r}")
    return ev, source


def seed_note(ev: dict) -> str:
    """``", seed N (best Avg of its seeds)"`` for a figure title, from an evaluation.json's spec."""
    seed = (ev.get("spec") or {}).get("seed")
    return "" if seed is None else f", seed {seed} (best Avg of its seeds)"


def fig6_confusion(evaluation_json, out_stem) -> list[Path]:
    """Fig. 6: confusion matrix per device (rows: true scene, normalised; cells annotated with counts)."""
    ev, source = load_evaluation(evaluation_json)
    scenes = list(ev["scene_labels"])
    devices = device_order(ev["per_device"].keys())
    if not devices:
        return _placeholder(out_stem, "Fig. 6: confusion matrices", f"{source}: no per-device results")
    n = len(scenes)
    fig = Figure(figsize=(4.3 * len(devices) + 0.8, 5.2), layout="compressed")
    axes = fig.subplots(1, len(devices), squeeze=False)[0]
    image = None
    for ax, dev in zip(axes, devices):
        entry = ev["per_device"][dev]
        if "confusion" not in entry:
            raise ResultsError(f"{source}: per_device.{dev}: missing key 'confusion'")
        counts = np.asarray(entry["confusion"], dtype=float)
        if counts.shape != (n, n):
            raise ResultsError(
                f"{source}: per_device.{dev}.confusion has shape {counts.shape}, expected ({n}, {n}) scene labels"
            )
        totals = counts.sum(axis=1, keepdims=True)
        norm = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
        for r in range(n):
            for c in range(n):
                if counts[r, c]:
                    ax.text(c, r, f"{int(counts[r, c])}", ha="center", va="center", fontsize=6,
                            color="white" if norm[r, c] > 0.6 else "black")
        acc = entry.get("accuracy")
        acc_text = f": {100 * acc:.1f}%" if isinstance(acc, (int, float)) else ""
        ax.set_title(f"Device {dev.upper()}{acc_text}", fontsize=10)
        ax.set_xticks(range(n), scenes, rotation=90, fontsize=7)
        ax.set_yticks(range(n), scenes if ax is axes[0] else [""] * n, fontsize=7)
        ax.set_xlabel("predicted scene")
        if ax is axes[0]:
            ax.set_ylabel("true scene")
    fig.colorbar(image, ax=list(axes), shrink=0.7, label="fraction of the true scene")
    fig.suptitle(f"Fig. 6: confusion matrices of {ev.get('cell_id', 'the model')}{seed_note(ev)}", fontsize=10,
                 y=1.0, va="bottom")
    return save_figure(fig, out_stem)


# --------------------------------------------------------------------------------------------- Fig. 7

def load_attention(attention_npz, scene_labels=None) -> dict:
    """Read ``attention.npz`` (no pickles) into ``maps (K,P,Q) float32`` and string arrays."""
    source = str(attention_npz)
    try:
        with np.load(attention_npz, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{source}: cannot read the attention maps: {exc}") from exc
    for key in ("maps", "filename", "scene", "device"):
        if key not in data:
            raise ResultsError(f"{source}: missing array {key!r} (has {sorted(data)})")
    maps = np.asarray(data["maps"], dtype=np.float32)
    if maps.ndim != 3:
        raise ResultsError(f"{source}: 'maps' has shape {maps.shape}, expected (K, P, Q)")
    k = maps.shape[0]
    out = {"maps": maps, "source": source}
    for key in ("filename", "scene", "device", "pred_scene"):
        if key not in data:
            continue
        arr = np.asarray(data[key]).reshape(-1)
        if len(arr) != k:
            raise ResultsError(f"{source}: {key!r} has {len(arr)} entries, 'maps' has {k}")
        if key in ("scene", "pred_scene") and arr.dtype.kind in "iu" and scene_labels is not None:
            arr = np.asarray([scene_labels[int(i)] for i in arr])
        out[key] = arr.astype(str)
    return out


def clip_stem(filename: str, device: str) -> str:
    """``audio/airport-lisbon-1-2-b.wav`` with device ``b`` -> ``airport-lisbon-1-2`` (the parallel key)."""
    stem = Path(str(filename)).stem
    suffix = f"-{device}"
    return stem[: -len(suffix)] if stem.endswith(suffix) else stem


def choose_attention_clips(att: dict, scene_order=None) -> tuple[list[str], list[str], dict, list[str]]:
    """Pick one clip per (scene, device): a parallel recording of all devices where one exists.

    Returns ``(scenes, devices, chosen {(scene, device): index}, scenes_without_parallel)``.
    """
    scenes_present = list(dict.fromkeys(att["scene"]))
    scenes = [s for s in (scene_order or []) if s in scenes_present] + sorted(
        s for s in scenes_present if s not in (scene_order or []))
    devices = device_order(att["device"])
    stems = [clip_stem(f, d) for f, d in zip(att["filename"], att["device"])]
    chosen, missing = {}, []
    for scene in scenes:
        idx = [i for i in range(len(stems)) if att["scene"][i] == scene]
        groups: dict[str, dict[str, int]] = {}
        for i in idx:
            groups.setdefault(stems[i], {}).setdefault(att["device"][i], i)
        parallel = sorted(s for s, g in groups.items() if all(d in g for d in devices))
        if parallel:
            chosen.update({(scene, d): groups[parallel[0]][d] for d in devices})
            continue
        missing.append(scene)
        for d in devices:
            first = [i for i in idx if att["device"][i] == d]
            if first:
                chosen[(scene, d)] = first[0]
    return scenes, devices, chosen, missing


def fig7_attention(attention_npz, out_stem, *, scene_labels=None, title: str | None = None) -> list[Path]:
    """Fig. 7: attention of the true class per scene (rows) and device (columns); time x, mel y.

    Each row shares one colour scale, so the devices of a parallel recording compare directly.
    """
    att = load_attention(attention_npz, scene_labels)
    title = title or "Fig. 7: attention maps of the true class"
    if att["maps"].shape[0] == 0:
        return _placeholder(out_stem, title, f"{att['source']}: no attention maps")
    scenes, devices, chosen, missing = choose_attention_clips(att, list(scene_labels) if scene_labels else None)
    fig = Figure(figsize=(2.2 * len(devices) + 1.6, 1.35 * len(scenes) + 1.2), layout="constrained")
    axes = fig.subplots(len(scenes), len(devices), squeeze=False)
    for r, scene in enumerate(scenes):
        row_maps = [att["maps"][chosen[(scene, d)]] for d in devices if (scene, d) in chosen]
        vmin = min(float(m.min()) for m in row_maps)
        vmax = max(float(m.max()) for m in row_maps)
        for c, dev in enumerate(devices):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"Device {dev.upper()}", fontsize=9)
            if c == 0:
                ax.set_ylabel(scene.replace("_", " "), fontsize=8)
            if (scene, dev) not in chosen:
                ax.text(0.5, 0.5, "no clip", ha="center", va="center", fontsize=7, transform=ax.transAxes)
                continue
            i = chosen[(scene, dev)]
            ax.imshow(att["maps"][i].T, origin="lower", aspect="auto", cmap="magma",
                      vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1e-12)
            if "pred_scene" in att:
                ax.text(0.02, 0.96, f"pred: {att['pred_scene'][i]}", transform=ax.transAxes, fontsize=6,
                        va="top", color="white")
    axes[-1, 0].set_xlabel("time →", fontsize=8)
    fig.supxlabel("x: time frames, y: mel bands (low at the bottom)", fontsize=8)
    if not missing:
        note = "one clip recorded in parallel by all devices per scene"
    elif len(missing) == len(scenes):
        note = "no parallel recordings: showing the clips available per device"
    else:
        note = "no parallel recordings for " + ", ".join(missing) + " (showing the clips available)"
    fig.suptitle(f"{title}\n({note})", fontsize=9)
    return save_figure(fig, out_stem)


# --------------------------------------------------------------------------------------------- curves

def _curve_label(path) -> str:
    p = Path(path)
    return f"{p.parent.parent.name}/{p.parent.name}" if p.parent.name.startswith("seed") else p.parent.name or p.stem


def training_curves(metrics_csvs, out_stem, *, title: str = "Training curves") -> list[Path]:
    """Loss (and learning rate, lambda, device accuracy where present) per cell against iterations.

    ``metrics_csvs`` is a list of ``metrics.csv`` paths (labelled ``cell_id/seedN`` from their
    folders) or a dict ``{label: path or DataFrame}``. Panels whose column is empty everywhere are
    left out. Up to 12 runs get a colour and legend entry each; more are coloured by strategy.
    """
    items = metrics_csvs.items() if isinstance(metrics_csvs, dict) else [(_curve_label(p), p) for p in metrics_csvs]
    frames = []
    for label, obj in items:
        df, source = _read_frame(obj, f"metrics of {label}")
        require_columns(df, ["iteration", "loss"], source)
        frames.append((label, df))
    if not frames:
        return _placeholder(out_stem, title, "no metrics.csv files")
    panels = [("loss", "loss (solid: total, dotted: scene)"), ("lr", "learning rate"), ("lambda", "λ (Eq. 2)"),
              ("device_acc", "device accuracy (CNN-d)")]
    panels = [(col, name) for col, name in panels
              if any(col in df.columns and pd.to_numeric(df[col], errors="coerce").notna().any() for _, df in frames)]
    fig = Figure(figsize=(4.0 * len(panels) + 0.5, 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    by_strategy = len(frames) > MAX_LEGEND
    keys = [_strategy_of(label) if by_strategy else label for label, _ in frames]
    palette = {k: CURVE_COLOURS[i % len(CURVE_COLOURS)] for i, k in enumerate(dict.fromkeys(keys))}
    for n, (label, df) in enumerate(frames):
        colour = palette[keys[n]]
        label = None if by_strategy and keys.index(keys[n]) != n else keys[n]
        it = pd.to_numeric(df["iteration"], errors="coerce")
        for ax, (col, name) in zip(axes, panels):
            if col not in df.columns:
                continue
            y = pd.to_numeric(df[col], errors="coerce")
            ok = y.notna() & it.notna()
            ax.plot(it[ok], y[ok], color=colour, lw=1, label=label)
            if col == "loss" and "loss_scene" in df.columns:
                ys = pd.to_numeric(df["loss_scene"], errors="coerce")
                ok = ys.notna() & it.notna()
                ax.plot(it[ok], ys[ok], color=colour, lw=1, ls=":")
    for ax, (col, name) in zip(axes, panels):
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if col == "lambda":
            ax.set_yscale("log")
    axes[0].legend(fontsize=6)
    fig.suptitle(f"{title} ({len(frames)} runs{', coloured by strategy' if by_strategy else ''})", fontsize=10)
    return save_figure(fig, out_stem)


def _strategy_of(label: str) -> str:
    m = re.search(STRATEGY_REGISTRY.regex(), label)  # longest first: multi_task_learned is not multi_task
    return m.group(0) if m else "other"


def render_all(*, cells_csv, preset, fig6_evaluation, fig7_evaluation, fig7_attention_npz=None, metrics_csvs,
               out_dir) -> dict[str, list[Path]]:
    """Render Figs. 5-7 and the training curves into ``out_dir`` as ``{name}.png`` / ``{name}.pdf``.

    Fig. 5 draws Table I's cells of ``cells_csv`` (:func:`table1_cells`, from the resolved ``preset``).

    ``fig6_evaluation``/``fig7_evaluation`` are the ``evaluation.json`` of the models shown;
    ``fig7_attention_npz`` the ``attention.npz`` of Fig. 7's model (``None`` for a model without
    attention pooling: Fig. 7 is then a placeholder saying so). Every file named is read; a missing one
    raises :class:`ResultsError` naming it (:func:`load_attention`).
    """
    out = Path(out_dir)
    done = {"fig5_layers": fig5_layers(table1_cells(cells_csv, preset), out / "fig5_layers"),
            "fig6_confusion": fig6_confusion(fig6_evaluation, out / "fig6_confusion")}
    ev, _ = load_evaluation(fig7_evaluation)
    title = f"Fig. 7: attention of the true class, {ev.get('cell_id', 'multi-task model')}{seed_note(ev)}"
    if fig7_attention_npz is not None:
        done["fig7_attention"] = fig7_attention(fig7_attention_npz, out / "fig7_attention",
                                                scene_labels=ev["scene_labels"], title=title)
    else:
        done["fig7_attention"] = _placeholder(out / "fig7_attention", title,
                                              f"no attention maps: {ev.get('cell_id', 'the model')} has no attention pooling")
    done["training_curves"] = training_curves(list(metrics_csvs), out / "training_curves")
    return done
