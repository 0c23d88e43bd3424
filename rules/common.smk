# Shared helpers of the workflow: the resolved preset, paths, and code hashes.
# Rules stay declarative; everything computed here is a small call into caanet.
import os
import re
import shutil
import sys
from pathlib import Path

# Import caanet from this checkout (not from wherever it was installed), here and in every
# script job, so that a copy of the repository runs its own code.
sys.path.insert(0, workflow.basedir)
os.environ.update(
    PYTHONPATH=os.pathsep.join([workflow.basedir] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
)

from caanet.config import check_config, check_unique_keys, read_command_line_values, resolve
from caanet.provenance import code_hash
from caanet import grid
from caanet import methods
from caanet import paths
from caanet import rerun
from caanet import trainserver
from caanet import training
from caanet import workflow_support as ws
from caanet.data.manifest import refresh_manifest
from caanet.vocab import METHOD_REGISTRY, cell_id_regex

# Snakemake reads config.yaml, --configfile files and profiles keeping the last of a repeated key
# without a word; a repeated key in any of them is refused, naming the file, key path and lines.
check_unique_keys(ws.snakemake_yaml_files(workflow))
# Snakemake passes nested --config values (and top-level ones such as `false`) as strings: each is
# read as a YAML scalar where the schema expects a number, boolean or null (never a file's value).
config.update(read_command_line_values(config, workflow.config_settings.config))
check_config(config)  # the schema, rules/schemas/config.schema.yaml: each key's type, range and enum
P = resolve(config)
# Every result path is spelled once, in caanet/paths.py; the rules use its templates.

# A local run never hands out more cores than the machine has: `--cores 8` on 2 cores would start
# eight one-thread jobs that slow each other down (docs/cluster.md, "Cores"). Jobs on a cluster
# (non-local executors) are unaffected; inside a cluster job the affinity is its allocation.
if workflow.local_exec and workflow.global_resources["_cores"].value is not None:
    _requested = workflow.global_resources["_cores"].value
    if ws.capped_cores(_requested) < _requested:
        print(
            f"caanet: --cores {_requested} capped to this machine's {ws.capped_cores(_requested)} cores",
            file=sys.stderr,
        )
        workflow.global_resources["_cores"] = ws.capped_cores(_requested)

# Checked once, key by key, before any job runs (unknown keys or wrong types name the key).
ws.check_preset(P)
TABLE1_CELLS = grid.table1_cells(P)

# Code each stage depends on: the entry modules of its scripts and every caanet module they import
# (caanet.provenance.code_hash follows the imports), plus the data files the code reads. A change
# reruns that stage and what follows, nothing before it.
CODE = {
    "data": code_hash("caanet.data.synth", "caanet.data.layout", "caanet.devices"),
    "features": code_hash("caanet.audio", "caanet.features", "caanet.data.layout"),
    "train": code_hash(*training.ENTRY_MODULES),
    "stats": code_hash("caanet.grid", "caanet.aggregate", "caanet.stats", "caanet.claims", "caanet.complexity_table",
                       "caanet.field", data=("paper",)),
    "render": code_hash(
        "caanet.render.report",
        "caanet.render.figures",
        "caanet.render.tables",
        "caanet.render.dataset_page",
        data=("paper", "render/templates"),
    ),
}


# A device-robustness method's code: its hooks, named in the registry as strings (caanet.methods), so
# followed here. Its fit and derived cache (rules/methods.smk) and its cells' training depend on it; a
# change reruns only the method's jobs.
METHOD_CODE = {m.name: code_hash(*methods.hook_modules(m.name)) for m in METHOD_REGISTRY if methods.hook_modules(m.name)}


def method_code(wildcards):
    """The code hash of a training job's method (empty for the paper's training)."""
    return METHOD_CODE.get(ws.cell_spec(P, wildcards.dataset, wildcards.cell, 0).method, "")


def _names_regex(names):
    names = sorted(names)
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


DATASETS = P["datasets"]
DATASETS_BY_SOURCE = {
    s: [n for n, d in DATASETS.items() if d["source"] == s] for s in ("embedded", "zenodo", "local")
}

# A local dataset is read in place: its manifest (path, size, mtime_ns per file), refreshed at every
# parse and rewritten only when it changed, is the index rule's input, so an edited meta.csv or
# split file, or a replaced WAV, reruns what depends on the dataset and an untouched one nothing.
def manifest_path(dataset):
    return paths.MANIFEST.format(dataset=dataset)


for _name in DATASETS_BY_SOURCE["local"]:
    refresh_manifest(DATASETS[_name]["path"], manifest_path(_name))


wildcard_constraints:
    dataset=_names_regex(DATASETS),
    seed=r"\d+",
    cell=cell_id_regex(groups=False, anchored=False),


def dataset_root(wildcards):
    """The dataset in the real layout: a folder, a download's dataset.json, or a local dataset's
    manifest (caanet.data.manifest; the dataset is used in place)."""
    d = DATASETS[wildcards.dataset]
    if d["source"] == "local":
        return manifest_path(wildcards.dataset)
    if d["source"] == "zenodo":
        return paths.ZENODO.format(dataset=wildcards.dataset)
    return paths.DATA.format(dataset=wildcards.dataset)


def cache_path(dataset):
    return paths.FEATURES.format(dataset=dataset, fhash=ws.feature_params(P, dataset).hash())


def cache_input(wildcards):
    return cache_path(wildcards.dataset)


def train_inputs(wildcards):
    """A training job's feature caches: the plain one, or a method's derived one in its place or beside
    it (caanet.workflow_support.train_inputs)."""
    return ws.train_inputs(P, wildcards.dataset, wildcards.cell)


def cell_files(specs, name):
    """One path per distinct cell (Table II reuses Table I's teacher-forcing cells); ``name`` is a
    key of caanet.paths.CELL_FILES."""
    return list(dict.fromkeys(paths.cell_path(s, name) for s in specs))


def resource(kind, key):
    """A resource of the preset (`resources.<kind>.<key>`), growing with the attempt for retries."""
    value = P["resources"][kind][key]
    if key in ("mem_mb", "runtime"):
        return lambda wildcards, attempt: value * attempt
    return value


def gpu_share(wildcards):
    """Percent of a GPU a training job holds: computed where a pool of shares is declared
    (profiles/local-gpu: `gpu_share=100` per card) or SLURM shards are configured
    (resources.train.gpu_shards), else 0 (no torch import for CPU runs)."""
    if "gpu_share" not in workflow.global_resources and not P["resources"]["train"].get("gpu_shards", 0):
        return 0
    return ws.cell_gpu_share(P, wildcards.dataset, wildcards.cell)


def gpu_gres(wildcards):
    """`--gres=shard:N` on SLURM sites with GPU shards (resources.train.gpu_shards > 0), else none."""
    return ws.shard_gres(gpu_share(wildcards), P["resources"]["train"].get("gpu_shards", 0))


def latex_available():
    return bool(shutil.which("latexmk") or shutil.which("pdflatex"))


# --- inputs that depend on Table I's layer selection (checkpoints in rules/tables.smk) ---


def selected_layers(wildcards=None):
    """Table I's best conditioning layer per (topology, pooling): known once Table I is done."""
    layers_csv = checkpoints.aggregate_table1.get().output.layers   # raises until Table I is aggregated
    # caanet.aggregate (pandas) only from here: a parse without Table I's results imports no pandas
    # or scipy through it (tests/test_speed.py).
    from caanet.aggregate import read_layers

    return read_layers(layers_csv)


def table23_specs():
    layers = selected_layers()
    return grid.table2_cells(P, layers) + grid.table3_cells(P, layers)


def table4_specs():
    """Table IV's cells (beyond the paper; none without tables.table4), at Table I's layers."""
    return grid.table4_cells(P, selected_layers())


def table5_specs():
    """Table V's cells (beyond the paper; none without tables.table5), at Table I's layers; those of
    method none are Table IV's own (shared jobs)."""
    return grid.table5_cells(P, selected_layers())


def strategy_table_specs():
    """The cells of Tables II-V (all need Table I's layer selection)."""
    return table23_specs() + table4_specs() + table5_specs()


# Tables rendered and shown in the report: I-III always, IV when the preset has tables.table4.
RENDERED_TABLES = [1, 2, 3] + ([4] if "table4" in grid.grid_config(P).table_datasets else [])
HAS_TABLE5 = "table5" in grid.grid_config(P).table_datasets
# Tables in the report: those rendered by caanet.render.tables, and Table V (caanet.render.field).
REPORT_TABLES = RENDERED_TABLES + ([5] if HAS_TABLE5 else [])


def best_multitask(wildcards):
    """The files of the multi-task models shown in Figs. 6 and 7 (chosen from Table II): their
    evaluation.json (fig6, fig7) and, for an attention model in Fig. 7, its attention.npz."""
    out = checkpoints.aggregate_tables.get().output
    return ws.figure_cells(P, out.table2, out.cells, selected_layers())


def all_metrics(wildcards):
    checkpoints.aggregate_tables.get()
    return cell_files(TABLE1_CELLS + table23_specs(), "metrics")


def all_benchmarks(wildcards):
    checkpoints.aggregate_tables.get()
    specs = TABLE1_CELLS + strategy_table_specs()
    return list(dict.fromkeys(paths.cell_benchmark(s) for s in specs))


def all_targets():
    targets = [paths.DATASET_PAGE.format(dataset=d) for d in DATASETS]
    targets += [paths.PAPER_HTML]
    if latex_available():
        targets.append(paths.PAPER_PDF)
    else:
        print(
            f"caanet: no LaTeX found (latexmk/pdflatex): {paths.PAPER_PDF} is skipped, "
            f"{paths.PAPER_HTML} is built. Install texlive-latex-base texlive-latex-recommended latexmk for the PDF.",
            file=sys.stderr,
        )
    return targets
