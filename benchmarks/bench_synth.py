"""Generation speed of the embedded dataset (run by hand; not part of the test suite).

    python benchmarks/bench_synth.py --clip-seconds 10 --n-jobs 2
    python benchmarks/bench_synth.py --clip-seconds 2 --n-jobs 2 --segments 4 --learnability
    python benchmarks/bench_synth.py --dataset embedded2020 --n-jobs 2 --learnability

Prints clips (WAV files) per minute and segments per minute; with ``--learnability``, also the
accuracy per device of a nearest-class-mean classifier on log band energies (train -> evaluate),
the same sanity check as tests/test_synth.py, on this larger set.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from caanet.data import synth
from caanet.data.layout import SCENE_LABELS, read_dataset


def ncm_accuracy(df, features: np.ndarray) -> dict[str, float]:
    """Nearest class mean on standardised features: scene accuracy on the test split per device."""
    train = (df["split"] == "train").to_numpy()
    z = (features - features[train].mean(0)) / (features[train].std(0) + 1e-9)
    labels = df["scene"].to_numpy()
    means = np.stack([z[train & (labels == s)].mean(0) for s in SCENE_LABELS])
    pred = np.array(SCENE_LABELS)[np.argmin(((z[:, None, :] - means[None]) ** 2).sum(-1), axis=1)]
    test = (df["split"] == "test").to_numpy()
    out = {d: float(np.mean(pred[test & (df["device"] == d).to_numpy()] == labels[test & (df["device"] == d).to_numpy()]))
           for d in sorted(df["device"].unique())}
    out["all"] = float(np.mean(pred[test] == labels[test]))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip-seconds", type=float, default=10.0)
    ap.add_argument("--n-jobs", type=int, default=2)
    ap.add_argument("--cities", type=int, default=3, help="number of cities (locations_per_city=1)")
    ap.add_argument("--segments", type=int, default=2, help="segments per location")
    ap.add_argument("--parallel-fraction", type=float, default=1 / 12)
    ap.add_argument("--learnability", action="store_true")
    ap.add_argument("--keep", type=Path, default=None, help="write the dataset here instead of a temp folder")
    ap.add_argument("--dataset", default=None,
                    help="generate this embedded dataset of config.yaml as configured (the size options are ignored)")
    args = ap.parse_args(argv)
    names = ["barcelona", "helsinki", "london", "paris", "stockholm", "vienna", "lyon", "prague"]
    if args.dataset:
        import yaml

        from caanet import workflow_support as ws

        config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
        cfg = ws.synth_config(ws.synth_settings(config, args.dataset), args.dataset)
    else:
        cfg = synth.SynthConfig.from_dict({
            "clip_seconds": args.clip_seconds, "cities": names[: args.cities], "locations_per_city": 1,
            "segments_per_location": args.segments, "parallel_fraction": args.parallel_fraction,
        }, where="bench")
    work = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    root = args.keep or work / "ds"
    try:
        summary = synth.generate_dataset(root, cfg, n_jobs=args.n_jobs, overwrite=True)
        minutes = summary["elapsed_s"] / 60
        summary["clips_per_minute"] = round(summary["n_clips"] / minutes, 1)
        summary["segments_per_minute"] = round(summary["n_segments"] / minutes, 1)
        summary["n_jobs"] = args.n_jobs
        if args.learnability:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from test_synth import band_features

            df = read_dataset(root)
            summary["ncm_accuracy"] = ncm_accuracy(df, np.stack([band_features(p) for p in df["path"]]))
        print(json.dumps(summary, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
