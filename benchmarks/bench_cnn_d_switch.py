"""Experiment: does Eq. 2's lambda switch fire in the default preset, for which CNN-d widths, at what cost?

For each dataset of the default preset (embedded2018 / embedded2019 / embedded2020) and each seed,
trains the argmax multi-task cell of one row (``--row``, default cnn_pool-max at layer 1: the
cheapest scene network; with the argmax conditioning CNN-d's training does not depend on the scene
network, so every argmax multi_task cell of a dataset and seed would give the same numbers: check it
with ``--row``) with each candidate ``training.device_channels`` and the default preset's other
training settings, directly through :func:`caanet.training.train_cell`, and prints per run: the
iteration after which lambda switched (or ``-``), CNN-d's validation accuracy at its last check and
its test accuracy on the seen devices; per width: the extra FLOPs per training step that CNN-d
costs (:func:`caanet.cost.train_step_flops`, with and without CNN-d, for every row of the grid).

    python benchmarks/bench_cnn_d_switch.py --widths 4,8 8,16 16,32 --seeds 0 1 2

The feature caches must exist (``results/features/{dataset}-{hash}.h5``; ``snakemake --cores 1
results/features/embedded2018-<hash>.h5`` builds one). One process, one thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from caanet import config, grid, paths
from caanet.cost import train_step_flops
from caanet.models import ModelConfig
from caanet.spec import CellSpec
from caanet.training import train_cell
from caanet.workflow_support import feature_params, scene_labels, train_config, train_settings


def widths(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def cache_path(preset: dict, dataset: str) -> Path:
    return Path(paths.FEATURES.format(dataset=dataset, fhash=feature_params(preset, dataset).hash()))


def step_flops(preset: dict, dataset: str, row: tuple[str, str], layer: int, device_channels, strategy: str) -> int:
    fp = feature_params(preset, dataset)
    cfg = train_config(train_settings(preset), preset["name"])
    conditional = strategy not in ("joint", "single_device")
    spec = CellSpec(dataset, row[0], row[1], strategy, cond_layer=layer if conditional else None,
                    device="a" if strategy == "single_device" else None)
    n_seen = len(grid.seen_devices_of(preset, dataset))
    mc = ModelConfig.from_spec(spec, n_classes=len(scene_labels(preset, dataset)), n_devices=n_seen,
                               channels=cfg.channels, device_channels=device_channels,
                               input_shape=(fp.n_frames, fp.n_mels))
    return train_step_flops(mc, cfg.batch_size)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", nargs="+", type=widths, default=[(4, 8), (8, 16), (16, 32)])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--datasets", nargs="+", default=["embedded2018", "embedded2019", "embedded2020"])
    ap.add_argument("--row", default="cnn_pool-max", help="topology-pooling of the multi-task cell")
    ap.add_argument("--layer", type=int, default=1)
    ap.add_argument("--strategy", default="multi_task")
    ap.add_argument("--csv", help="write the runs here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    preset = config.resolve({**config.read_yaml("config.yaml"), "preset": "default"})
    base = train_config(train_settings(preset), "default")
    topology, pooling = args.row.split("-", 1)
    runs = []
    for dataset in args.datasets:
        cache = cache_path(preset, dataset)
        hold = grid.holds_validation(preset, dataset)
        for dc in args.widths:
            cfg = dataclasses.replace(base, device_channels=dc)
            for seed in args.seeds:
                spec = CellSpec(dataset, topology, pooling, args.strategy, cond_layer=args.layer, seed=seed,
                                fidelity=preset.get("fidelity", "paper"))
                with tempfile.TemporaryDirectory() as tmp:
                    t0 = time.perf_counter()
                    ev = train_cell(cache, spec, cfg, Path(tmp), threads=1, device="cpu", hold_validation=hold,
                                    reference_device=grid.reference_devices(preset)[dataset], log=lambda _line: None)
                    wall = time.perf_counter() - t0
                    metrics = pd.read_csv(Path(tmp) / "metrics.csv")
                checks = metrics.dropna(subset=["device_acc"])
                run = {"dataset": dataset, "device_channels": ",".join(map(str, dc)), "seed": seed,
                       "switched_at": ev["lambda_switched_at"],
                       "val_acc_last_check": float(checks["device_acc"].iloc[-1]) if len(checks) else None,
                       "val_acc_max": float(checks["device_acc"].max()) if len(checks) else None,
                       "test_acc_seen": ev["device_accuracy_seen"], "mean_all": ev["mean_all"],
                       "n_train": ev["n_train_clips"], "n_val": ev["n_validation_clips"], "wall_s": round(wall, 1)}
                runs.append(run)
                print(json.dumps(run), flush=True)
    df = pd.DataFrame(runs)
    if args.csv:
        df.to_csv(args.csv, index=False)
    print("\nswitch fired (runs) per dataset and width:")
    print(df.assign(fired=df["switched_at"].notna()).groupby(["dataset", "device_channels"])
          .agg(fired=("fired", "sum"), runs=("fired", "size"), median_switch=("switched_at", "median"),
               val_acc_max=("val_acc_max", "mean"), test_acc_seen=("test_acc_seen", "mean")).to_string())
    print("\nFLOPs per training step (batch size of the preset), multi_task at layer 1 vs joint:")
    rows = list(dict.fromkeys(list(grid.grid_config(preset).rows) + list(grid.grid_config(preset).table3_rows)))
    for dc in args.widths:
        extra = []
        for row in rows:
            mt = step_flops(preset, "embedded2018", row, 1, dc, "multi_task")
            jt = step_flops(preset, "embedded2018", row, 1, dc, "joint")
            extra.append((row, mt, jt))
        cnn_d = step_flops(preset, "embedded2018", ("cnn_pool", "max"), 1, dc, "multi_task") - step_flops(
            preset, "embedded2018", ("cnn_pool", "max"), 1, dc, "teacher_forcing")
        mean_ratio = sum(m / j for _, m, j in extra) / len(extra)
        print(f"  device_channels {dc}: CNN-d adds {cnn_d / 1e6:.1f} MFLOP per step; multi_task / joint "
              f"step FLOPs over the {len(rows)} rows: mean {mean_ratio:.3f}, "
              f"min {min(m / j for _, m, j in extra):.3f}, max {max(m / j for _, m, j in extra):.3f}")
    print("\nthe whole default run's training FLOPs (every cell x iterations; Table I's layers taken as 1):")
    layers = {row: 1 for row in rows}
    cells = grid.all_cells(preset, layers)
    for dc in args.widths:
        total = cnn_d_total = 0
        n_cnn_d = 0
        for c in cells:
            f = step_flops(preset, c.dataset, (c.topology, c.pooling), c.cond_layer or 1, dc, c.strategy)
            total += f * base.iterations
            if c.device_source == "predicted":
                n_cnn_d += 1
                cnn_d_total += (f - step_flops(preset, c.dataset, (c.topology, c.pooling), c.cond_layer, dc,
                                               "teacher_forcing")) * base.iterations
        print(f"  device_channels {dc}: {len(cells)} cells, {total / 1e12:.2f} TFLOP; CNN-d in {n_cnn_d} cells: "
              f"{cnn_d_total / 1e12:.2f} TFLOP ({100 * cnn_d_total / total:.1f} %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
