"""Benchmark: ``caanet predict`` on ten-second clips, in clips per second after start-up.

A default-preset-sized model (``channels [4, 8, 8, 16]``, ``device_channels [4, 8]``, as
config.yaml's ``default`` preset trains) on the paper's features of 10 s clips (320 frames x 64
mel bins), saved as a self-describing model file with random weights (speed does not depend on
them). The command's ``main`` runs in this process, first on one clip (start-up: imports, mel
filters, the first forward pass), then on a folder of N clips; the figure is N over the wall time
of that second call (model loading, audio reading, feature extraction, inference and writing the
CSV included). The start-up of the real command in a fresh process is printed beside it. Two inputs: (a) 44.1 kHz mono 16-bit (DCASE devices B/C, all of
DCASE 2019); (b) 48 kHz stereo 24-bit (DCASE 2018 device A: down-mix and soxr resampling).
Each measurement is the best of ``--repeats`` runs.

    python benchmarks/bench_predict.py --clips 200 --cells atrous-att-multi_task-L4 cnn_pool-att-multi_task-L4

Target: >= 100 clips/s on a 2-core machine (issue 11). Other load on a shared machine lowers the
figure: the script prints the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from caanet.data.layout import SCENE_LABELS  # noqa: E402
from caanet.features import FeatureParams  # noqa: E402
from caanet.modelfile import model_payload, save_model_file  # noqa: E402
from caanet.models import ModelConfig, build_model  # noqa: E402
from caanet.spec import CellSpec  # noqa: E402

CHANNELS, DEVICE_CHANNELS = (4, 8, 8, 16), (4, 8)  # config.yaml, presets.default.training
CASES = {"a": (44100, 1, "PCM_16", "44.1 kHz mono 16-bit"), "b": (48000, 2, "PCM_24", "48 kHz stereo 24-bit")}


def write_clips(folder: Path, n: int, rate: int, channels: int, subtype: str, seconds: float = 10.0) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    for i in range(n):
        y = 0.05 * rng.standard_normal((t.size, channels)) + 0.1 * np.sin(2 * np.pi * (200 + 37 * i) * t)[:, None]
        sf.write(folder / f"clip{i:04d}.wav", y.astype(np.float32), rate, subtype=subtype)


def write_model(path: Path, cell: str) -> None:
    params = FeatureParams()
    spec = CellSpec.from_id(cell, dataset="bench", seed=0)
    mc = ModelConfig.from_spec(spec, channels=CHANNELS, device_channels=DEVICE_CHANNELS,
                               input_shape=(params.n_frames, params.n_mels))
    payload = model_payload(model=build_model(mc), model_config=mc, spec=spec, train_config=None,
                            feature_params=params, norm_mean=np.full(64, -8.0, np.float32),
                            norm_std=np.full(64, 2.0, np.float32), scene_labels=SCENE_LABELS,
                            device_labels=["a", "b", "c"])
    save_model_file(path, payload)


def run_predict(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one ``caanet.cli.main(argv)`` call in this process (its exit status must be 0)."""
    from caanet.cli import main as cli_main

    t0, c0 = time.perf_counter(), time.process_time()
    rc = cli_main(argv)
    if rc != 0:
        raise SystemExit(f"caanet {' '.join(argv)} exited with {rc}")
    return time.perf_counter() - t0, time.process_time() - c0


def subprocess_startup(argv: list[str]) -> float:
    """Wall seconds of the real command on one clip in a fresh process (imports, model load, one clip)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "caanet.cli", *argv], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"caanet {' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr}")
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cases", nargs="+", default=["a", "b"], choices=sorted(CASES))
    ap.add_argument("--cells", nargs="+", default=["atrous-att-multi_task-L4", "cnn_nopool-att-multi_task-L4",
                                                  "cnn_pool-att-multi_task-L4"])
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further options for caanet predict")
    args = ap.parse_args(argv)
    print(f"load average before: {os.getloadavg()}; CPUs: {os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        tmp = Path(tmp)
        for case in args.cases:
            rate, channels, subtype, what = CASES[case]
            write_clips(tmp / case, args.clips, rate, channels, subtype)
        for cell in args.cells:
            model = tmp / f"{cell}.pt"
            write_model(model, cell)
            for case in args.cases:
                base = ["predict", str(model), "--format", "csv", "-q", "-o", str(tmp / "out.csv"), *args.extra]
                one = [str(tmp / case / "clip0000.wav")]
                start = subprocess_startup(base + one)
                run_predict(base + one)  # warm-up in this process: imports, mel filters, first forward pass
                runs = [run_predict(base + [str(tmp / case)]) for _ in range(args.repeats)]
                wall, cpu = min(runs)
                print(f"{cell:30s} {CASES[case][3]:21s}: {args.clips / wall:6.1f} clips/s after start-up "
                      f"({args.clips} clips in {wall:.2f} s, {1000 * cpu / args.clips:.1f} ms CPU per clip); "
                      f"start-up + 1 clip in a fresh process {start:.2f} s")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
