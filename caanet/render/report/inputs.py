"""Everything the report reads, loaded once from the result files named (:class:`ReportInputs`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from caanet import aggregate, grid
from caanet import paths as rpaths
from caanet.io import read_results_csv
from caanet.render import tables as T


@dataclass
class ReportInputs:
    """The report's inputs: the resolved ``preset``, the table ``summaries`` (``{"table1": frame}``),
    the rendered table files, ``layers`` (records of ``layers.csv``), ``comparisons``/``claims``
    (``comparisons.csv``/``claims.csv`` frames or None), ``cells`` (``cells.csv`` or None), the
    ``reference``/``unseen`` devices per dataset, figure and benchmark files, ``complexity`` (the path of ``complexity.csv`` or None), ``table5`` (Table V's summary, beyond the paper, or None), the provenance overrides,
    and the ``warnings`` met while loading."""

    preset: dict
    summaries: dict[str, pd.DataFrame] = field(default_factory=dict)
    rendered: list[Path] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)
    comparisons: pd.DataFrame | None = None
    claims: pd.DataFrame | None = None
    cells: pd.DataFrame | None = None
    reference: dict = field(default_factory=dict)
    unseen: dict = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    benchmarks: list[Path] = field(default_factory=list)
    complexity: Path | None = None
    table5: pd.DataFrame | None = None
    versions: dict | None = None
    commit: str | None = None
    date: str | None = None
    repo_dir: object = None
    warnings: list[str] = field(default_factory=list)
    table_cells: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def layer_map(self) -> dict:
        """``{(topology, pooling): layer}`` of ``layers.csv``."""
        return {(r["topology"], r["pooling"]): int(r["cond_layer"]) for r in self.layers}


def table_cell_frames(inp: ReportInputs) -> dict[str, pd.DataFrame]:
    """Each table's rows of ``cells.csv`` (:func:`caanet.aggregate.table_cells_frame`): the one selection
    of a table's cells that every section uses. A table whose cells cannot be expanded (no layers for
    its rows) is left out with a warning."""
    from caanet.errors import ConfigError

    if inp.cells is None or not inp.preset.get("datasets") or not inp.preset.get("tables"):
        return {}
    cells = inp.cells.astype({"dataset": str, "cell_id": str, "seed": "int64"})
    out = {}
    for table in inp.summaries:
        try:
            out[table] = aggregate.table_cells_frame(cells, inp.preset, table, inp.layer_map)
        except ConfigError as exc:
            inp.warnings.append(f"cells.csv: the cells of {table} cannot be selected ({exc})")
    return out


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


def _result_file(given, results_dir, template: str, **fields) -> Path | None:
    """``given``, else ``template``'s file under ``results_dir`` (:mod:`caanet.paths`), else None."""
    if given is not None:
        return Path(given)
    return None if results_dir is None else Path(rpaths.results_file(template, results_dir, **fields))


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


def read_claims(path) -> pd.DataFrame:
    """Read ``results/stats/claims.csv`` and check its columns (:data:`caanet.claims.CLAIM_COLUMNS`)."""
    from caanet.claims import CLAIM_COLUMNS

    return read_results_csv(path, "the claims", columns=CLAIM_COLUMNS)


def load_inputs(*, preset: dict, results_dir=None, summaries=None, layers_csv=None, cells_csv=None,
                tables_dir=None, figures=None, stats_csv=None, claims_csv=None, benchmarks=None,
                complexity_csv=None, versions: dict | None = None, commit: str | None = None, date: str | None = None,
                repo_dir=None) -> ReportInputs:
    """Read the files named (see :func:`caanet.render.report.build_context`) into :class:`ReportInputs`."""
    inp = ReportInputs(preset=preset, versions=versions, commit=commit, date=date, repo_dir=repo_dir)
    summaries_given = {p.name: p for p in _as_paths(summaries)}
    has_table4 = "table4" in (preset.get("tables") or {})
    for n in (1, 2, 3, 4):
        if n == 4 and not has_table4:
            continue   # an optional table: table4.csv holds only its header without tables.table4
        name = Path(rpaths.TABLE.format(n=n)).name
        path = _result_file(summaries_given.get(name), results_dir, rpaths.TABLE, n=n)
        if path is not None and path.exists():
            inp.summaries[f"table{n}"] = T.read_summary(path)
        else:
            inp.warnings.append(f"{path or name} is missing: Table {n} is not shown")
    if "table5" in (preset.get("tables") or {}):  # Table V (caanet.render.field): its own section
        from caanet.render.field import read_table5

        name = Path(rpaths.TABLE.format(n=5)).name
        path = _result_file(summaries_given.get(name), results_dir, rpaths.TABLE, n=5)
        if path is not None and path.exists():
            inp.table5 = read_table5(path)
        else:
            inp.warnings.append(f"{path or name} is missing: Table V is not shown")
    inp.rendered = _as_paths(tables_dir)
    layers_csv = _result_file(layers_csv, results_dir, rpaths.LAYERS)
    inp.layers = pd.read_csv(layers_csv).to_dict("records") if layers_csv and layers_csv.exists() else []
    stats_path = _result_file(stats_csv, results_dir, rpaths.COMPARISONS)
    inp.comparisons = read_comparisons(stats_path) if stats_path and stats_path.exists() else None
    if inp.comparisons is None:
        inp.warnings.append(f"{stats_path or 'comparisons.csv'} is missing: no significance tests")
    claims_path = _result_file(claims_csv, results_dir, rpaths.CLAIMS)
    inp.claims = read_claims(claims_path) if claims_path and claims_path.exists() else None
    if inp.claims is None:
        inp.warnings.append(f"{claims_path or 'claims.csv'} is missing: the paper's claims are not judged")
    cells_csv = _result_file(cells_csv, results_dir, rpaths.CELLS)
    inp.cells = pd.read_csv(cells_csv, dtype={"device": str}) if cells_csv and cells_csv.exists() else None
    inp.reference = grid.reference_devices(preset) if preset.get("datasets") else {}
    inp.unseen = grid.unseen_devices(preset) if preset.get("datasets") else {}
    if benchmarks is None and results_dir is not None:
        benchmarks = Path(results_dir) / Path(rpaths.BENCHMARKS).relative_to(rpaths.RESULTS)
    inp.benchmarks = [p for p in _as_paths(benchmarks) if p.suffix == ".tsv" and p.exists()]
    inp.figures = _as_paths(figures)
    inp.complexity = _result_file(complexity_csv, results_dir, rpaths.COMPLEXITY)
    inp.table_cells = table_cell_frames(inp)
    return inp
