"""The report's typesetting: Jinja2 templates to a self-contained HTML page and a LaTeX article, and
the article to a PDF (``latexmk``, or ``pdflatex`` twice).

The skeletons ``templates/report.html.j2`` and ``templates/report.tex.j2`` include the registered
sections' templates (``templates/sections/{key}.{html,tex}.j2``) in order
(:mod:`caanet.render.report.sections`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jinja2

from caanet.io import atomic_path, write_text_atomic
from caanet.render import tables as T

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _html_env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def _tex_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=False, undefined=jinja2.StrictUndefined,
        block_start_string=r"\BLOCK{", block_end_string="}", variable_start_string=r"\VAR{",
        variable_end_string="}", comment_start_string=r"\#{", comment_end_string="}",
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
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
