"""Seen vs unseen devices on a 2020-style embedded set, end to end (run by hand; not a test).

    python benchmarks/bench_unseen.py --dataset embedded2020 --preset default --threads 1

Generates the dataset of ``config.yaml`` (or reuses ``--work``), indexes it (checking the declared
unseen devices), resamples, builds the log-mel cache with the preset's feature parameters, then
trains a few cells with the preset's training settings and prints, per cell, the seconds of
training and of the whole cell (wall and CPU, evaluation included), the mean accuracy over seen and over unseen devices, the unseen-device policy and the
final lambda. The pipeline's own functions throughout (the Snakemake rules wire the same ones).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from caanet import workflow_support as ws
from caanet.audio import prepare_audio
from caanet.config import resolve
from caanet.data import synth
from caanet.data.layout import read_dataset
from caanet.devices import check_unseen_devices
from caanet.features import build_cache
from caanet.spec import CellSpec
from caanet.training import train_cell

CELLS = ("atrous-att-joint", "atrous-att-teacher_forcing-L3", "atrous-att-multi_task-L3",
         "atrous-att-multi_task_learned-L3")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="embedded2020")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--cells", nargs="+", default=list(CELLS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="keep data, cache and cells here (reused if present)")
    args = ap.parse_args(argv)
    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    config["preset"] = args.preset
    preset = resolve(config)
    preset["datasets"] = {args.dataset: dict(config["datasets"][args.dataset], name=args.dataset)}
    d = preset["datasets"][args.dataset]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench_unseen_"))
    out = {"dataset": args.dataset, "preset": args.preset, "cells": {}}
    try:
        root = work / "data"
        t0 = time.perf_counter()
        if not root.exists():
            synth.generate_dataset(root, ws.synth_config(ws.synth_settings(preset, args.dataset), args.dataset),
                                   n_jobs=args.n_jobs)
        index = read_dataset(root, scene_labels=ws.scene_labels(preset, args.dataset), device_labels=d["devices"])
        check_unseen_devices(index, d.get("unseen_devices") or [], where=str(root))
        params = ws.feature_params(preset, args.dataset)
        cache = work / f"{args.dataset}-{params.hash()}.h5"
        if not cache.exists():
            audio = prepare_audio(index, work / "audio44k", sample_rate=params.sample_rate, n_jobs=args.n_jobs)
            build_cache(audio, cache, params, dataset=args.dataset, scene_labels=ws.scene_labels(preset, args.dataset),
                        device_labels=d["devices"], n_jobs=args.n_jobs)
        out["data_seconds"] = round(time.perf_counter() - t0, 1)
        cfg = ws.train_config(ws.train_settings(preset), args.preset)
        for cell in args.cells:
            spec = CellSpec.from_id(cell, dataset=args.dataset, seed=args.seed, fidelity=preset.get("fidelity", "paper"))
            wall, cpu = time.perf_counter(), time.process_time()
            ev = train_cell(cache, spec, cfg, work / "cells" / cell, threads=args.threads, log=lambda m: None)
            out["cells"][cell] = {k: ev[k] for k in ("train_seconds", "mean_all", "mean_seen", "mean_unseen",
                                                     "unseen_device_policy", "lambda_rule", "lambda_final",
                                                     "device_accuracy_seen")}
            # the whole cell (data loading, training, evaluation, files), without the process start
            out["cells"][cell]["cell_seconds"] = round(time.perf_counter() - wall, 2)
            out["cells"][cell]["cell_cpu_seconds"] = round(time.process_time() - cpu, 2)
            out["cells"][cell]["per_device"] = {k: round(v["accuracy"], 3) for k, v in ev["per_device"].items()}
            print(cell, json.dumps(out["cells"][cell]), flush=True)
        print(json.dumps(out, indent=1))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
