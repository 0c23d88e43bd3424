"""Benchmark: WAV -> prepare_audio -> build_cache (HDF5), in clips per second.

Two inputs of N ten-second noise clips each:
  (a) 44.1 kHz mono 16-bit (used in place: read + log-mel + HDF5);
  (b) 48 kHz stereo 24-bit (down-mix + soxr HQ resample + float32 WAV, then as (a)).
Each case: one warm-up run, then the best of ``--repeats`` runs; converted audio and the cache are
deleted before every run so every run does the whole work. Besides wall-clock clips/s it prints the
CPU time per clip of all processes, a figure that other load on the machine disturbs far less.

    python benchmarks/bench_cache.py --clips 400 --jobs 2

Targets on a 2-core machine: >= 200 clips/s for (a), >= 60 clips/s for (b).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from caanet.audio import prepare_audio
from caanet.features import FeatureParams, build_cache

SCENES = ["airport", "bus", "metro", "metro_station", "park", "public_square", "shopping_mall",
          "street_pedestrian", "street_traffic", "tram"]
CASES = {
    "a": {"rate": 44100, "channels": 1, "subtype": "PCM_16", "what": "44.1 kHz mono 16-bit", "target": 200.0},
    "b": {"rate": 48000, "channels": 2, "subtype": "PCM_24", "what": "48 kHz stereo 24-bit", "target": 60.0},
}


def generate(root: Path, n_clips: int, rate: int, channels: int, subtype: str, seconds: float = 10.0) -> pd.DataFrame:
    """Write ``n_clips`` noise clips under ``root/audio`` and return their index."""
    rng = np.random.default_rng(0)
    n = int(round(seconds * rate))
    base = (0.1 * rng.standard_normal((n, channels))).astype(np.float32)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_clips):
        scene = SCENES[i % len(SCENES)]
        name = f"audio/{scene}-city-{i}-0-a.wav"
        y = np.roll(base, rng.integers(n), axis=0) * np.float32(0.5 + rng.random())
        sf.write(str(root / name), y, rate, subtype=subtype)
        rows.append({"filename": name, "path": str(root / name), "scene": scene, "device": "a",
                     "identifier": f"city-{i}", "split": "train"})
    return pd.DataFrame(rows)


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the pool workers), user + system."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_once(index: pd.DataFrame, work: Path, params: FeatureParams, n_jobs: int) -> tuple[float, float]:
    """Wall and CPU seconds for prepare_audio + build_cache from scratch."""
    for path in (work / "audio44k", work / "cache.h5"):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    quiet = lambda msg: None  # noqa: E731
    t0, c0 = time.perf_counter(), cpu_seconds()
    audio = prepare_audio(index, work / "audio44k", sample_rate=params.sample_rate, n_jobs=n_jobs, log=quiet)
    build_cache(audio, work / "cache.h5", params, dataset="bench", scene_labels=SCENES, device_labels=["a"],
                n_jobs=n_jobs, log=quiet)
    return time.perf_counter() - t0, cpu_seconds() - c0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=400, help="clips per case (default 400)")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per case; the best counts (default 3)")
    ap.add_argument("--cases", default="ab", help="which cases to run: a, b or ab (default ab)")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one, deleted)")
    args = ap.parse_args(argv)

    params = FeatureParams()
    scratch = Path(tempfile.mkdtemp(prefix="bench_cache_", dir=args.workdir))
    results = {}
    try:
        for key in args.cases:
            case = CASES[key]
            work = scratch / key
            t0 = time.perf_counter()
            index = generate(work / "data", args.clips, case["rate"], case["channels"], case["subtype"])
            print(f"({key}) {case['what']}: generated {args.clips} clips in {time.perf_counter() - t0:.1f} s", flush=True)
            run_once(index, work, params, args.jobs)  # warm-up
            runs = [run_once(index, work, params, args.jobs) for _ in range(args.repeats)]
            rate = args.clips / min(wall for wall, _ in runs)
            cpu_ms = 1000 * min(cpu for _, cpu in runs) / args.clips
            results[key] = rate
            listing = ", ".join(f"{args.clips / wall:.1f}" for wall, _ in runs)
            verdict = "meets" if rate >= case["target"] else "BELOW"
            print(f"({key}) {case['what']}: {rate:.1f} clips/s best of {args.repeats} (runs: {listing}) with "
                  f"n_jobs={args.jobs}; {verdict} the target {case['target']:.0f} clips/s", flush=True)
            print(f"({key}) CPU time {cpu_ms:.2f} ms per clip (all processes): at most "
                  f"{1000 * args.jobs / cpu_ms:.0f} clips/s on {args.jobs} idle cores", flush=True)
            shutil.rmtree(work)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if all(results[k] >= CASES[k]["target"] for k in results) else 1


if __name__ == "__main__":
    sys.exit(main())
