"""A self-contained HTML page summarising a feature cache: counts, parameters, example log-mels.

Only the cache is read, opened once through its one reader (:class:`caanet.features.FeatureCache`:
counts from :meth:`~caanet.features.FeatureCache.summary`, example clips from
:meth:`~caanet.features.FeatureCache.logmel_rows`); the figures are embedded as base64 PNG so the
page has no external assets.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path, PurePosixPath
from typing import Sequence

import jinja2
import numpy as np

from caanet.features import FeatureCache
from caanet.io import write_text_atomic

TEMPLATE = "dataset.html.j2"
_TEMPLATES = Path(__file__).resolve().parent / "templates"


def parallel_key(filename: str, device: str) -> str | None:
    """The recording a clip belongs to across devices: its stem without the ``-{device}`` suffix.

    ``audio/airport-barcelona-0-0-b.wav`` (device ``b``) -> ``airport-barcelona-0-0``; None when the
    name does not end with the device.
    """
    stem = PurePosixPath(str(filename)).stem
    suffix = f"-{device}"
    return stem[: -len(suffix)] if stem.endswith(suffix) and len(stem) > len(suffix) else None


def pick_examples(filenames: Sequence[str], devices: Sequence[str], scenes: Sequence[str],
                  device_labels: Sequence[str], per_device: int) -> list[dict[str, int]]:
    """Rows of example clips, each ``{device: row index}``.

    First up to ``per_device`` recordings made by several devices in parallel (most devices first,
    spread over scenes), then, for a device shown fewer than ``per_device`` times, its own clips.
    """
    groups: dict[str, dict[str, int]] = {}
    for i, (name, dev) in enumerate(zip(filenames, devices)):
        key = parallel_key(name, dev)
        if key is not None:
            groups.setdefault(key, {}).setdefault(dev, i)
    candidates = sorted((k for k, g in groups.items() if len(g) > 1), key=lambda k: (-len(groups[k]), k))
    chosen: list[str] = []
    seen_scenes: set[str] = set()
    for prefer_new_scene in (True, False):
        for key in candidates:
            if len(chosen) >= per_device:
                break
            scene = scenes[next(iter(groups[key].values()))]
            if key in chosen or (prefer_new_scene and scene in seen_scenes):
                continue
            chosen.append(key)
            seen_scenes.add(scene)
    rows = [dict(sorted(groups[k].items(), key=lambda kv: list(device_labels).index(kv[0]))) for k in chosen]

    shown = {d: sum(d in row for row in rows) for d in device_labels}
    used = {i for row in rows for i in row.values()}
    for dev in device_labels:
        for i in (j for j, d in enumerate(devices) if d == dev and j not in used):
            if shown[dev] >= per_device:
                break
            rows.append({dev: i})
            shown[dev] += 1
    return rows


def _png_base64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def example_figure(cache: FeatureCache, rows: list[dict[str, int]], device_labels: Sequence[str],
                   filenames: Sequence[str]) -> str | None:
    """One panel per example clip (rows x devices) of the open ``cache``, time on x, mel bin on y; base64 PNG."""
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    index = sorted({i for row in rows for i in row.values()})
    x = dict(zip(index, cache.logmel_rows(index)))
    lo = min(float(np.percentile(v, 1)) for v in x.values())
    hi = max(float(np.percentile(v, 99.9)) for v in x.values())
    cols = list(device_labels)
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.2 * len(cols), 2.0 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c, dev in enumerate(cols):
            ax = axes[r][c]
            if dev not in row:
                ax.axis("off")
                continue
            i = row[dev]
            ax.imshow(x[i].T, origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi)
            ax.set_title(f"{dev}: {PurePosixPath(filenames[i]).name}", fontsize=7)
            ax.set_xlabel("frame", fontsize=7)
            ax.set_ylabel("mel bin", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.tight_layout()
    try:
        return _png_base64(fig)
    finally:
        plt.close(fig)


def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template(TEMPLATE)


def render_dataset_page(cache_path: str | os.PathLike, out_html: str | os.PathLike, *, title: str,
                        examples_per_device: int = 3) -> dict:
    """Write the summary page of a feature cache to ``out_html`` (atomic); return the summary."""
    with FeatureCache(cache_path) as cache:
        summary = cache.summary()
        cols = {k: [str(v) for v in cache.columns[k]] for k in ("filename", "device", "scene")}
        rows = pick_examples(cols["filename"], cols["device"], cols["scene"], summary["device_labels"],
                             examples_per_device)
        figure = example_figure(cache, rows, summary["device_labels"], cols["filename"])
    html = _template().render(
        title=title,
        s=summary,
        cache_name=Path(cache_path).name,
        n_parallel=sum(len(r) > 1 for r in rows),
        figure=figure,
    )
    write_text_atomic(out_html, html)
    return summary
