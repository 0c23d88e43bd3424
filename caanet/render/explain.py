"""The figure of ``caanet explain``: the paper's Fig. 7 for one recording.

Top: the log-mel spectrogram; below it one panel per explained class with its map
(:class:`caanet.explain.Explanation`) on the same time-frequency grid. Time in seconds on x;
frequency on the mel scale on y, labelled in Hz. Drawn like :func:`caanet.render.figures.fig7_attention`
(matplotlib ``Figure`` without pyplot state, the ``magma`` colour map, low frequencies at the bottom)
and written atomically.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from caanet.explain import Explanation, frame_times, hz_ticks, mel_axis
from caanet.io import atomic_path

KIND_TITLES = {"attention": "normalised attention A′ (Eq. 5-6)", "cam": "class activation map of the linear head"}
FORMATS = ("png", "pdf", "svg")


def _format_hz(f: float) -> str:
    return f"{f / 1000:g}k" if f >= 1000 else f"{f:g}"


def draw_explanation(ex: Explanation, out_path, *, title: str | None = None, dpi: int = 150) -> Path:
    """Draw ``ex`` into ``out_path`` (``.png``, ``.pdf`` or ``.svg``, by its suffix); return the path.

    Raises ValueError for another suffix.
    """
    out_path = Path(out_path)
    fmt = out_path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"{out_path}: the figure's file name must end in one of {['.' + f for f in FORMATS]}")
    params = ex.params
    centres, step = mel_axis(params)
    y0, y1 = centres[0] - step / 2, centres[-1] + step / 2
    x0, x1 = frame_times(params, ex.logmel.shape[0])
    extent = (x0, x1, y0, y1)
    ticks = hz_ticks(params.fmin, params.fmax)
    import librosa

    tick_pos = librosa.hz_to_mel(np.asarray(ticks, dtype=float), htk=False)
    n = 1 + len(ex.classes)
    width = min(max(6.0, 1.2 * (x1 - x0) + 3.0), 16.0)
    fig = Figure(figsize=(width, 1.9 * n + 0.8), layout="constrained")
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0]
    probs = np.exp(ex.prediction.scene_logprob)
    img = axes[0].imshow(ex.logmel.T, origin="lower", aspect="auto", cmap="magma", extent=extent)
    fig.colorbar(img, ax=axes[0], label="log-mel", pad=0.01)
    axes[0].set_title(f"log-mel spectrogram of {Path(ex.path).name} ({ex.prediction.duration_s:.2f} s, "
                      f"{ex.prediction.n_windows} window{'s' if ex.prediction.n_windows > 1 else ''})", fontsize=9)
    for i, name in enumerate(ex.classes):
        ax = axes[i + 1]
        m = np.ma.masked_where(~ex.covered, ex.maps[i])  # bins under no map cell: blank
        if ex.kind == "attention":
            img = ax.imshow(m.T, origin="lower", aspect="auto", cmap="magma", extent=extent, vmin=0.0,
                            vmax=float(m.max()) if m.max() > 0 else 1.0)
        else:
            lim = float(np.abs(m).max()) or 1.0
            img = ax.imshow(m.T, origin="lower", aspect="auto", cmap="RdBu_r", extent=extent, vmin=-lim, vmax=lim)
        fig.colorbar(img, ax=ax, pad=0.01, label="A′ per bin" if ex.kind == "attention" else "CAM")
        p = probs[ex.scene_labels.index(name)]
        ax.set_title(f"{name} (p = {p:.3f}): {KIND_TITLES[ex.kind]}", fontsize=9)
    for ax in axes:
        ax.set_yticks(tick_pos, [_format_hz(f) for f in ticks])
        ax.set_ylabel("Hz (mel scale)", fontsize=8)
        ax.tick_params(labelsize=7)
        for s in ex.window_starts_s[1:]:
            ax.axvline(s + x0, color="white", lw=0.6, ls=":")
    axes[-1].set_xlabel("time (s)", fontsize=8)
    cell = ex.cell
    note = "" if cell == (1, 1) else (f"\neach map cell covers {cell[0]} frames x {cell[1]} mel bands; "
                                      "bins under no cell (dropped by the pooling) are blank")
    text = title or f"Fig. 7 for one recording: {KIND_TITLES[ex.kind]}{note}"
    fig.suptitle("\n".join(textwrap.fill(line, int(width * 11)) for line in text.split("\n")), fontsize=10)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, metadata={"Software": None} if fmt == "png" else None,
                    bbox_inches="tight", pad_inches=0.1)
    return out_path
