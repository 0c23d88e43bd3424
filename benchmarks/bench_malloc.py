"""Does ``caanet.runtime.keep_freed_memory`` speed up a small network's training step?

Usage::

    python benchmarks/bench_malloc.py                 # 3 rounds, default-preset widths, one thread
    python benchmarks/bench_malloc.py --rounds 5 --topologies atrous

glibc's settings are process-wide and adapt to what a process has freed so far, so each
measurement is a fresh process training ONE network, as a training job does: the bare step
(forward, backward, fused Adam) of the attention multi-task model at the default preset's widths
(4, 8, 8, 16 / CNN-d 4, 8), 31x64 inputs, batch 16. The two settings alternate, round by round, so
load from other processes hits both alike; the median ms/step per setting is printed with the
one-thread matmul GFLOP/s measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import sys, time
sys.path.insert(0, {repo!r})
import torch
import torch.nn.functional as F
from caanet.models import ModelConfig, build_model
from caanet.optim import Adam
from caanet.runtime import keep_freed_memory
if {tune}:
    keep_freed_memory()
torch.set_num_threads(1)
torch.manual_seed(0)
m = build_model(ModelConfig({topology!r}, "att", device_source="predicted", cond_layer=3, channels=(4, 8, 8, 16),
                            device_channels=(4, 8), input_shape=(31, 64)))
o = Adam(m.parameters(), lr=1e-3)
x, y, d = torch.randn(16, 31, 64), torch.randint(0, 10, (16,)), torch.randint(0, 3, (16,))
def step():
    o.zero_grad()
    out = m(x)
    (F.nll_loss(out.scene, y) + F.nll_loss(out.device, d)).backward()
    o.step()
for _ in range(10):
    step()
best = float("inf")
for _ in range(3):
    t = time.perf_counter()
    for _ in range({steps}):
        step()
    best = min(best, (time.perf_counter() - t) / {steps})
print(best * 1e3)
"""


def run(topology: str, tune: bool, steps: int) -> float:
    code = CHILD.format(repo=str(REPO), tune=tune, topology=topology, steps=steps)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=40, help="steps per timing (best of 3 timings per process)")
    p.add_argument("--topologies", default="cnn_pool,atrous")
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_train_step import matmul_gflops

    results = {}
    for topology in args.topologies.split(","):
        times = {"glibc default": [], "keep_freed_memory": []}
        for _ in range(args.rounds):
            times["glibc default"].append(run(topology, False, args.steps))
            times["keep_freed_memory"].append(run(topology, True, args.steps))
        med = {k: statistics.median(v) for k, v in times.items()}
        results[topology] = {"ms_per_step": times, "median_ms": med}
        print(f"[{topology}] glibc default {med['glibc default']:.2f} ms/step, keep_freed_memory "
              f"{med['keep_freed_memory']:.2f} ms/step ({100 * (1 - med['keep_freed_memory'] / med['glibc default']):+.0f} % "
              f"time saved); rounds: {times}", flush=True)
    gf = matmul_gflops()
    print(f"one-thread float32 1024x1024 matmul: {gf:.1f} GFLOP/s (same run)")
    results["matmul_gflops_1thread"] = gf
    return results


if __name__ == "__main__":
    main()
