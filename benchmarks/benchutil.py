"""What the default-preset benchmarks share: one-thread process set-up, interleaved CPU-time timing,
the default preset's networks, and the machine's matmul figure.

Timing rules (issue 19): every figure is the CPU time of this process (``time.process_time``) on
one torch thread, so other processes on the machine inflate it far less than wall time; the
variants of one comparison run interleaved (A B A B ...) after a warm-up, and each reports the
minimum and the median of its repeats. :func:`setup` calls ``caanet.runtime.keep_freed_memory``
first, as a training job does (glibc would otherwise return freed activation buffers to the
kernel and add page faults to every step).
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's caanet, not an installed one
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from bench_train_step import matmul_gflops  # noqa: E402

# the default preset (config.yaml presets.default.training; 1 s clips -> 31 frames x 64 mels)
CHANNELS = (4, 8, 8, 16)
DEVICE_CHANNELS = (4, 8)
INPUT_SHAPE = (31, 64)
BATCH = 16
N_CLASSES, N_DEVICES = 10, 3
TOPOLOGIES = ("cnn_pool", "cnn_nopool", "atrous")
# strategy -> (device_source, cond_layer): joint (no CNN-d, no conditioning), teacher forcing
# (the true device conditions block 3), multi-task (CNN-d's argmax conditions block 3)
STRATEGIES = {"joint": ("none", None), "teacher_forcing": ("oracle", 3), "multi_task": ("predicted", 3)}


def setup(threads: int = 1) -> bool:
    """Keep freed memory (:func:`caanet.runtime.keep_freed_memory`), ``threads`` intra-op threads,
    one inter-op thread. Returns whether glibc's thresholds were set."""
    from caanet.runtime import keep_freed_memory

    kept = keep_freed_memory()
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # settable once per process
        torch.set_num_interop_threads(1)
    return kept


def model_config(topology: str, strategy: str, fidelity: str = "paper", pooling: str = "att"):
    """The default preset's :class:`caanet.models.ModelConfig` of ``topology`` x ``strategy``."""
    from caanet.models import ModelConfig

    source, layer = STRATEGIES[strategy]
    return ModelConfig(topology, pooling, n_classes=N_CLASSES, n_devices=N_DEVICES, cond_layer=layer,
                       device_source=source, channels=CHANNELS, device_channels=DEVICE_CHANNELS,
                       input_shape=INPUT_SHAPE, fidelity=fidelity)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
                clock: Callable[[], float] = time.process_time) -> dict[str, list[float]]:
    """Each function ``warmup`` times, then ``repeats`` rounds calling each once in turn (A B A B ...);
    returns the seconds of every call per name, on ``clock`` (CPU seconds of this process)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = clock()
            fn()
            times[name].append(clock() - t)
    return times


def stats_ms(times: list[float], per: float = 1.0) -> tuple[float, float]:
    """``(minimum, median)`` of ``times`` (seconds) in milliseconds, divided by ``per``."""
    return min(times) * 1e3 / per, statistics.median(times) * 1e3 / per


def matmul_figures() -> dict[str, float]:
    """The one-thread float32 1024x1024 matmul GFLOP/s (``bench_train_step.matmul_gflops``, median of 7 runs of
    20 products) in this process's CPU time (``cpu``, the clock of these benchmarks) and in wall time (``wall``;
    the two agree on a quiet machine)."""
    return {"cpu": matmul_gflops(clock=time.process_time), "wall": matmul_gflops()}


def machine_line(mm: dict[str, float]) -> str:
    """The line printed beside the figures: the matmul GFLOP/s (:func:`matmul_figures`), torch, the clock."""
    return (f"one-thread float32 1024x1024 torch matmul: {mm['cpu']:.1f} GFLOP/s in CPU time ({mm['wall']:.1f} in "
            f"wall time); torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), "
            f"{torch.get_num_threads()} thread(s); the times below are CPU time of this process")
