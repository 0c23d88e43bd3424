"""Benchmark: the peak memory of ``caanet predict`` on one long recording, against its length.

For each length (default 1, 10 and 60 minutes) a 48 kHz stereo 24-bit WAV (DCASE 2018 device A's
format: the down-mix and the soxr resampling both run) is written to a temporary folder (60 min is
1.04 GB; ``--tmp`` picks the folder, everything is deleted afterwards) and the real command runs
on it in a fresh process: ``python -m caanet.cli predict MODEL FILE --format json`` with a
default-preset-sized model (``benchmarks/bench_predict.py``'s ``write_model``, random weights).
The figure is that process's peak resident set size (``ru_maxrss`` from ``os.wait4``), which
includes the interpreter, torch and the model (the start-up floor, also measured on a 10 s clip).

    python benchmarks/bench_predict_memory.py                    # 1, 10, 60 minutes
    python benchmarks/bench_predict_memory.py --minutes 1 10 --cell cnn_pool-att-multi_task-L4

Target (issue 18): flat in the recording's length and at most 500 MB. RSS does not depend on
other load on the machine; the wall times printed beside it do.
"""

from __future__ import annotations

import argparse
import json
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_predict import write_model  # noqa: E402

RATE, CHANNELS, SUBTYPE = 48000, 2, "PCM_24"
TARGET_MB = 500.0


def write_recording(path: Path, seconds: float, *, block_seconds: float = 10.0) -> None:
    """A ``seconds``-long 48 kHz stereo PCM_24 WAV, written block by block (noise and a tone that
    changes every block, so windows differ)."""
    rng = np.random.default_rng(0)
    n = int(round(seconds * RATE))
    step = int(block_seconds * RATE)
    with sf.SoundFile(path, "w", RATE, CHANNELS, SUBTYPE, format="WAV") as fh:
        for k, start in enumerate(range(0, n, step)):
            m = min(step, n - start)
            t = np.arange(m) / RATE
            tone = 0.1 * np.sin(2 * np.pi * (200 + 37 * (k % 50)) * t)
            fh.write((0.05 * rng.standard_normal((m, CHANNELS)) + tone[:, None]).astype(np.float32))


def peak_rss(argv: list[str]) -> tuple[float, float, str]:
    """``(peak RSS in MB, wall seconds, stdout)`` of ``python -m caanet.cli ARGV`` in a fresh process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "caanet.cli", *argv], stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"caanet {' '.join(argv)} exited with {proc.returncode}:\n{stderr}")
    return usage.ru_maxrss / 1024.0, wall, stdout  # ru_maxrss is in KiB on Linux


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0, 60.0])
    ap.add_argument("--cell", default="atrous-att-multi_task-L4")
    ap.add_argument("--tmp", default=None, help="folder for the recordings (default: the system's temporary folder)")
    ap.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="further options for caanet predict")
    args = ap.parse_args(argv)
    print(f"load average before: {os.getloadavg()}; CPUs: {os.cpu_count()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_predict_memory_", dir=args.tmp) as tmp:
        tmp = Path(tmp)
        model = tmp / "model.pt"
        write_model(model, args.cell)
        for minutes in [10 / 60, *args.minutes]:
            wav = tmp / f"rec_{minutes:g}min.wav"
            write_recording(wav, minutes * 60)
            mb, wall, stdout = peak_rss(["predict", str(model), str(wav), "--format", "json", *args.extra])
            windows = json.loads(stdout)["results"][0]["windows"]
            wav.unlink()
            label = "10 s (start-up floor)" if minutes < 1 else f"{minutes:g} min"
            rows.append((minutes, mb))
            print(f"{label:22s} 48 kHz stereo 24-bit: peak RSS {mb:7.1f} MB, {windows:4d} windows, {wall:6.1f} s wall",
                  flush=True)
    peak = max(mb for _, mb in rows)
    spread = peak - min(mb for _, mb in rows)
    print(f"largest peak {peak:.1f} MB (target <= {TARGET_MB:.0f} MB), spread over lengths {spread:.1f} MB")
    print(f"load average after: {os.getloadavg()}")
    return 0 if peak <= TARGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
