"""The compute-cost section: wall and CPU time per table, summed from Snakemake's benchmark files."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from caanet.errors import ResultsError
from caanet.render.report.fmt import TABLE_TITLES
from caanet.render.report.inputs import ReportInputs
from caanet.spec import CellSpec
from caanet.vocab import SUMMARY_DEVICES


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
    devices = sorted(set(summary["device"]) - set(SUMMARY_DEVICES))
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


def build(inp: ReportInputs) -> dict:
    return {"compute": compute_cost(inp.summaries, inp.benchmarks)}
