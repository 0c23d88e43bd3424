"""The figures section: Figs. 5-7 and the training curves, embedded (PNG) and included (PDF)."""

from __future__ import annotations

import base64

from caanet.render.report.inputs import ReportInputs, _as_paths, _find

FIGURES = (
    ("fig5_layers", "Fig. 5: accuracy per device and conditioning layer",
     "Teacher-forcing cells of Table I ({dataset}); one panel per topology and pooling; bars are devices {devices}."),
    ("fig6_confusion", "Fig. 6: confusion matrices of the best multi-task model",
     "Rows are the true scenes (normalised per row), columns the predicted ones; numbers are clip counts."),
    ("fig7_attention", "Fig. 7: attention heat maps per class and device",
     "Attention of the true class of the multi-task CAA-Net; the same clip recorded by each device where "
     "the dataset has parallel recordings. Time runs left to right, mel bands bottom to top."),
    ("training_curves", "Training curves",
     "Loss, learning rate, λ of Eq. (2) and the device accuracy of CNN-d against the iteration, per cell."),
)


def figure_entries(figure_paths, preset: dict | None = None) -> list[dict]:
    """The figures of :data:`FIGURES` found among ``figure_paths``: base64 PNG and the PDF's path; the
    captions name Table I's dataset and devices (from ``preset``)."""
    from caanet.render.report.fmt import devices_sentence

    paths = _as_paths(figure_paths)
    table1 = ((preset or {}).get("tables") or {}).get("table1", {}).get("dataset", "")
    devices = ((preset or {}).get("datasets") or {}).get(table1, {}).get("devices") or []
    fields = {"dataset": table1 or "Table I's dataset", "devices": devices_sentence(devices)}
    out = []
    for stem, title, caption in FIGURES:
        png, pdf = _find(paths, stem + ".png"), _find(paths, stem + ".pdf")
        if png is None or not png.exists():
            continue
        out.append({"key": stem, "title": title, "caption": caption.format(**fields),
                    "png_b64": base64.b64encode(png.read_bytes()).decode("ascii"),
                    "pdf": str(pdf.resolve()) if pdf is not None and pdf.exists() else None})
    return out


def build(inp: ReportInputs) -> dict:
    return {"figures": figure_entries(inp.figures, inp.preset)}
