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

Per run it also records CNN-d's accuracy after the last iteration on the lambda rule's clips and on
its own training clips, its confusion counts on the rule's clips, and every check. ``--cache`` trains
on another cache (e.g. a larger embedded2020 built with a temporary config change); ``--check-every``,
``--iterations`` and ``--batch-size`` (iterations, decay and check periods scaled to see the same clips)
vary the schedule. Run it with ``PYTHONPATH=.`` from the checkout: the script's folder comes first on
sys.path, so without it ``caanet`` is the installed (possibly another checkout's) package.

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


def cnn_d_confusion(model, fs, positions, n_devices: int, dev) -> list[list[int]]:
    """CNN-d's confusion counts (true device rows, predicted columns) on ``fs`` clips at ``positions``."""
    from caanet.training.batches import _batch, _eval_mode

    m = torch.zeros(n_devices, n_devices, dtype=torch.int64)
    with _eval_mode(model):
        for start in range(0, len(positions), 256):
            x, _, d = _batch(fs, positions[start:start + 256], dev)
            pred = model.device_net(x.unsqueeze(1)).argmax(1)
            m += torch.bincount(d * n_devices + pred, minlength=n_devices * n_devices).reshape(n_devices, n_devices).cpu()
    return m.tolist()


def record_final_cnn_d_accuracy() -> None:
    """Wrap CellTrainer.evaluate so that evaluation.json also holds CNN-d's accuracy, after the last
    iteration, on the clips the lambda rule measures (``cnn_d_rule_acc_end``): the rule stops checking
    once it has switched, so metrics.csv has no end-of-training value. Runs after training: changes nothing."""
    from caanet.training.batches import device_accuracy
    from caanet.training.trainer import CellTrainer

    evaluate = CellTrainer.evaluate

    def wrapped(self, *args, **kwargs):
        out = evaluate(self, *args, **kwargs)
        if self.multi:
            out[0]["cnn_d_rule_acc_end"] = device_accuracy(self.model, self.lambda_clips, self.lambda_pos,
                                                           dev=self.dev, batch_size=self.cfg.eval_batch_size,
                                                           amp=self.amp)
            out[0]["cnn_d_train_acc_end"] = device_accuracy(self.model, self.train_t, self.data.train_idx,
                                                            dev=self.dev, batch_size=self.cfg.eval_batch_size,
                                                            amp=self.amp)
            out[0]["cnn_d_rule_confusion"] = cnn_d_confusion(self.model, self.lambda_clips, self.lambda_pos,
                                                             len(self.data.device_labels), self.dev)
        return out

    CellTrainer.evaluate = wrapped


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
    ap.add_argument("--cache", help="the feature cache to train on (default: the preset's, of each dataset)")
    ap.add_argument("--check-every", type=int, help="training.lambda_check_every (default: the preset's)")
    ap.add_argument("--iterations", type=int, help="training.iterations (a diagnostic: the preset's budget by default)")
    ap.add_argument("--batch-size", type=int, help="training.batch_size; with it iterations and lr_decay_every "
                    "scale by 16 / batch_size and lambda_check_every too (the same clips seen per cell)")
    ap.add_argument("--no-summary", action="store_true", help="print the runs only (no FLOP tables)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    record_final_cnn_d_accuracy()
    preset = config.resolve({**config.read_yaml("config.yaml"), "preset": "default"})
    base = train_config(train_settings(preset), "default")
    if args.batch_size:
        k = base.batch_size // args.batch_size
        base = dataclasses.replace(base, batch_size=args.batch_size, iterations=base.iterations * k,
                                   lr_decay_every=base.lr_decay_every * k,
                                   lambda_check_every=base.lambda_check_every * k,
                                   checkpoint_every=base.checkpoint_every * k, log_every=base.log_every * k)
    if args.iterations:
        base = dataclasses.replace(base, iterations=args.iterations)
    if args.check_every:
        base = dataclasses.replace(base, lambda_check_every=args.check_every)
    topology, pooling = args.row.split("-", 1)
    runs = []
    for dataset in args.datasets:
        cache = Path(args.cache) if args.cache else cache_path(preset, dataset)
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
                       "rule_acc_end": ev.get("cnn_d_rule_acc_end"), "train_acc_end": ev.get("cnn_d_train_acc_end"),
                       "confusion": json.dumps(ev.get("cnn_d_rule_confusion")),
                       "test_acc_seen": ev["device_accuracy_seen"], "mean_all": ev["mean_all"],
                       "mean_seen": ev.get("mean_seen"), "mean_unseen": ev.get("mean_unseen"),
                       "n_test": ev["n_test"],
                       "checks": ";".join(f"{int(i)}:{a:.3f}" for i, a in zip(checks["iteration"], checks["device_acc"])),
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
    if args.no_summary:
        return 0
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
