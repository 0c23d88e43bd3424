#!/usr/bin/env bash
# Time the whole default preset from a clean clone: generation, cache, every cell of Tables I-III,
# statistics, figures and the report (`snakemake --cores 8 all`), as the README's first command
# runs it. Prints the wall time and the per-stage sums of the rules' benchmark files.
#   bash benchmarks/bench_default_preset.sh [extra snakemake args]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone --quiet "$repo" "$work/caanet"
cd "$work/caanet"
start=$(date +%s)
snakemake --cores 8 all "$@" > "$work/run.log" 2>&1 || { tail -50 "$work/run.log"; exit 1; }
end=$(date +%s)
echo "default preset, clean clone: $((end - start)) s wall ($(nproc) cores)"
python3 - <<'PY'
import glob, collections
import pandas as pd
rows = collections.defaultdict(lambda: [0, 0.0, 0.0])
for f in glob.glob("results/benchmarks/**/*.tsv", recursive=True):
    rule = f.split("/")[2].removesuffix(".tsv")
    b = pd.read_csv(f, sep="\t")
    rows[rule][0] += 1
    rows[rule][1] += float(b["s"].iloc[-1])
    rows[rule][2] += float(b["cpu_time"].iloc[-1])
print(f"{'rule':<20}{'jobs':>6}{'wall s':>10}{'cpu s':>10}")
for rule, (n, s, c) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
    print(f"{rule:<20}{n:>6}{s:>10.0f}{c:>10.0f}")
PY
