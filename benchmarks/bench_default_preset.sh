#!/usr/bin/env bash
# Time the whole default preset as a new user runs it: for each --cores value, a clean clone of
# this repository's committed HEAD, `snakemake --cores N all` (generation, cache, every cell of
# Tables I-III, statistics, figures, report), then
#   - the wall time in minutes, beside the machine's speed measured in the same run just before and
#     after it: one-thread float32 1024x1024 torch matmul, median of 7 runs of 20 products, in
#     GFLOP/s. Nothing is scaled (issue 19: budgets are minutes measured on the project's machine in
#     a quiet window, with the matmul figure beside them);
#   - the training's share of the compute limit (issue 19, target >= 60 %): the FLOPs of every
#     trained cell (caanet.cost.run_training_flops: per cell the FLOPs of one training step of its
#     model at its batch size, times its iterations) over (the wall time of the training jobs x the
#     cores x the mean matmul GFLOP/s). The wall time of the training jobs runs from the first
#     train_cell job's start to the last one's end (caanet.cost.training_window: a job ends when
#     Snakemake writes its benchmark file, and started its wall seconds earlier); the cores are
#     --cores capped at the machine's, as a local run caps them;
#   - per train_cell job, the GFLOP/s of its training loop (its FLOPs over evaluation.json's
#     train_seconds) and of the whole job (over the benchmark file's wall seconds): means over all
#     jobs and per topology, each also as a share of the matmul figure;
#   - the per-job overhead of train_cell: median over jobs of the benchmark file's wall seconds
#     minus the training loop's own `train_seconds` from evaluation.json (target <= 2 s);
#   - per-rule job counts and summed wall/CPU seconds of the rules' benchmark files (train_cell's CPU
#     seconds from its logs when it trained in the training server's children: caanet/trainserver.py).
# Run it on an otherwise idle machine: other load inflates every figure.
#
#   bash benchmarks/bench_default_preset.sh               # --cores 2, then --cores 8
#   bash benchmarks/bench_default_preset.sh 2             # one value
#   PRESET=tiny bash benchmarks/bench_default_preset.sh 2 # the tiny preset: checks the script in a minute
#   EXTRA="--keep-going" bash benchmarks/bench_default_preset.sh
#   KEEP=1 bash benchmarks/bench_default_preset.sh         # keep the clones (results/, reports/) and say where
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
preset=${PRESET:-default}
extra=${EXTRA:-}
if [ "$#" -eq 0 ]; then set -- 2 8; fi
work=$(mktemp -d)
if [ -n "${KEEP:-}" ]; then
  trap 'echo "clones kept in $work"' EXIT
else
  trap 'rm -rf "$work"' EXIT
fi

matmul() {
  python3 -c "import sys; sys.path.insert(0, '$repo/benchmarks'); from bench_train_step import matmul_gflops; print(f'{matmul_gflops():.1f}')"
}

summary() {  # $1: the clone, $2: the wall seconds, $3/$4: matmul before/after, $5: cores
  (cd "$1" && python3 - "$2" "$3" "$4" "$5" "$preset" <<'PY'
import collections, glob, json, os, re, statistics, sys
import pandas as pd
from caanet.cost import compute_share, trained_cells, training_window
CHILD = re.compile(r"trained in the server's child \d+: ([0-9.]+) s CPU")
wall, mm_before, mm_after, cores, preset = sys.argv[1:6]
mm = (float(mm_before) + float(mm_after)) / 2
used_cores = min(int(cores), os.cpu_count() or int(cores))
rows = collections.defaultdict(lambda: [0, 0.0, 0.0])
overhead, job_s = [], {}
for f in glob.glob("results/benchmarks/**/*.tsv", recursive=True):
    parts = f.split("/")
    rule = parts[2].removesuffix(".tsv")
    b = pd.read_csv(f, sep="\t")
    s = float(b["s"].iloc[-1])
    rows[rule][0] += 1
    rows[rule][1] += s
    cpu = float(b["cpu_time"].iloc[-1])
    if rule == "train_cell":  # the child's CPU seconds, when it trained on the server
        log = f.replace("results/benchmarks/", "results/logs/").removesuffix(".tsv") + ".log"
        found = CHILD.findall(open(log).read()) if os.path.exists(log) else []
        cpu += float(found[-1]) if found else 0.0
    rows[rule][2] += cpu
    if rule == "train_cell":  # results/benchmarks/train_cell/{dataset}/{cell}/seed{n}.tsv
        key = (parts[3], parts[4], int(parts[5].removesuffix(".tsv").removeprefix("seed")))
        job_s[key] = s
        ev = f"results/cells/{parts[3]}/{parts[4]}/{parts[5].removesuffix('.tsv')}/evaluation.json"
        if os.path.exists(ev):
            overhead.append(s - float(json.load(open(ev))["train_seconds"]))
wall = int(wall)
print(f"preset {preset}, clean clone, snakemake --cores {cores} all: {wall} s = {wall / 60:.1f} min wall "
      f"({os.cpu_count()} cores); matmul {mm_before} GFLOP/s before, {mm_after} after (1 thread, 1024x1024 float32)")
cells = trained_cells("results")
if cells:
    flops = sum(c.flops for c in cells)
    start, end, n_jobs = training_window("results")
    share = compute_share(flops, end - start, used_cores, mm)
    print(f"training: {len(cells)} cells, {flops / 1e12:.2f} TFLOP (training steps, forward + backward); "
          f"train_cell jobs from the first start to the last end: {end - start:.0f} s = {(end - start) / 60:.1f} min; "
          f"compute limit {used_cores} cores x {mm:.1f} GFLOP/s: {flops / (used_cores * mm * 1e9) / 60:.1f} min; "
          f"share of the compute limit {100 * share:.0f} % (target >= 60 %)")
    groups = collections.defaultdict(lambda: ([], []))
    for c in cells:
        for name in ("all", c.model_config.topology):
            if c.train_seconds:
                groups[name][0].append(c.flops / c.train_seconds / 1e9)
            if job_s.get((c.dataset, c.cell, c.seed)):
                groups[name][1].append(c.flops / job_s[(c.dataset, c.cell, c.seed)] / 1e9)
    print(f"per train_cell job, mean GFLOP/s (share of the {mm:.1f} GFLOP/s matmul): training loop "
          f"(FLOPs / train_seconds), whole job (FLOPs / benchmark wall seconds)")
    for name in ["all", *sorted(g for g in groups if g != "all")]:
        loop, job = groups[name]
        line = f"  {name:<12}{len(loop):>5} jobs"
        if loop:
            line += f"  loop {statistics.mean(loop):6.1f} ({100 * statistics.mean(loop) / mm:3.0f} %)"
        if job:
            line += f"  job {statistics.mean(job):6.1f} ({100 * statistics.mean(job) / mm:3.0f} %)"
        print(line)
if overhead:
    q = statistics.quantiles(overhead, n=4) if len(overhead) > 1 else [overhead[0]] * 3
    med = statistics.median(overhead)
    print(f"train_cell per-job overhead (benchmark s - train_seconds) over {len(overhead)} jobs: median "
          f"{med:.2f} s (quartiles {q[0]:.2f}, {q[2]:.2f}) (target <= 2 s)")
print(f"{'rule':<20}{'jobs':>6}{'wall s':>10}{'cpu s':>10}")
for rule, (n, s, c) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
    print(f"{rule:<20}{n:>6}{s:>10.0f}{c:>10.0f}")
PY
  )
}

for cores in "$@"; do
  clone="$work/caanet-cores$cores"
  git clone --quiet "$repo" "$clone"
  before=$(matmul)
  start=$(date +%s)
  # shellcheck disable=SC2086
  (cd "$clone" && snakemake --cores "$cores" all --config preset="$preset" $extra > "$work/run-$cores.log" 2>&1) \
    || { tail -50 "$work/run-$cores.log"; exit 1; }
  end=$(date +%s)
  after=$(matmul)
  summary "$clone" "$((end - start))" "$before" "$after" "$cores"
  echo
done
