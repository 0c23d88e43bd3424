"""Experiment: does the posterior device conditioning need a temperature or a straight-through estimator?

Trains one multi-task cell (``--cell``, default atrous-att-multi_task_posterior-L3) of the default
preset on each dataset and seed with each variant of
:func:`caanet.models.conditioning.posterior_input` (``--variants``: ``T=<t>`` for the softmax at
temperature t, ``st`` for the straight-through estimator: forward the argmax one-hot, backward the
softmax's gradient), plus the paper's argmax (``argmax``: the same cell as ``multi_task``), directly
through :func:`caanet.training.train_cell` with the preset's hold-out, and prints per run the scene Avg
(all devices; Seen / Unseen where the dataset has unseen devices), CNN-d's test accuracy on the seen
devices, when lambda switched, and how peaked the posterior is (mean largest posterior probability on
the test clips).

    python benchmarks/bench_posterior.py --variants T=1 st argmax --seeds 0 1 2

The feature caches must exist (``results/features/{dataset}-{hash}.h5``). One process, one thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from caanet import config, grid, paths
from caanet.models import conditioning
from caanet.modelfile import load_model_file
from caanet.spec import CellSpec
from caanet.training import train_cell
from caanet.features import load_cache
from caanet.workflow_support import feature_params, train_config, train_settings


def run_variant(variant: str, cache: Path, spec: CellSpec, cfg, hold: bool, ref: str) -> dict:
    if variant == "argmax":
        spec = dataclasses.replace(spec, strategy=spec.strategy.replace("_posterior", ""))
        temperature, straight = 1.0, False
    elif variant == "st":
        temperature, straight = 1.0, True
    else:
        temperature, straight = float(variant.removeprefix("T=")), False
    conditioning.POSTERIOR_TEMPERATURE, conditioning.POSTERIOR_STRAIGHT_THROUGH = temperature, straight
    with tempfile.TemporaryDirectory() as tmp:
        ev = train_cell(cache, spec, cfg, Path(tmp), threads=1, device="cpu", hold_validation=hold,
                        reference_device=ref, log=lambda _line: None)
        mf = load_model_file(Path(tmp) / "model.pt")
        test = load_cache(cache, split="test")
        x = (test.x - mf.mean) / mf.std
        with torch.no_grad():
            logp = torch.cat([mf.model.eval()(torch.from_numpy(x[i:i + 256]).float()).device
                              for i in range(0, len(x), 256)])
        peak = float(logp.exp().max(dim=1).values.mean())
    return {"variant": variant, "dataset": spec.dataset, "seed": spec.seed, "mean_all": ev["mean_all"],
            "mean_seen": ev.get("mean_seen"), "mean_unseen": ev.get("mean_unseen"),
            "cnn_d_seen": ev["device_accuracy_seen"], "switched_at": ev["lambda_switched_at"],
            "posterior_peak": round(peak, 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", default=["T=1", "st", "argmax"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--datasets", nargs="+", default=["embedded2018", "embedded2020"])
    ap.add_argument("--cell", default="atrous-att-multi_task_posterior-L3")
    ap.add_argument("--device-channels", help="override training.device_channels, e.g. 8,16")
    ap.add_argument("--csv")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    preset = config.resolve({**config.read_yaml("config.yaml"), "preset": "default"})
    cfg = train_config(train_settings(preset), "default")
    if args.device_channels:
        cfg = dataclasses.replace(cfg, device_channels=tuple(int(v) for v in args.device_channels.split(",")))
    runs = []
    for dataset in args.datasets:
        cache = Path(paths.FEATURES.format(dataset=dataset, fhash=feature_params(preset, dataset).hash()))
        for seed in args.seeds:
            spec = CellSpec.from_id(args.cell, dataset=dataset, seed=seed, fidelity=preset.get("fidelity", "paper"))
            for variant in args.variants:
                run = run_variant(variant, cache, spec, cfg, grid.holds_validation(preset, dataset),
                                  grid.reference_devices(preset)[dataset])
                runs.append(run)
                print(json.dumps(run), flush=True)
    df = pd.DataFrame(runs)
    if args.csv:
        df.to_csv(args.csv, index=False)
    print(df.groupby(["dataset", "variant"])[["mean_all", "mean_seen", "mean_unseen", "cnn_d_seen", "posterior_peak"]]
          .agg(["mean", "std"]).round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
