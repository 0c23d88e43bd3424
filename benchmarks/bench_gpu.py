"""Training throughput of paper-scale cells on a GPU: iterations/s, TFLOP/s and share of the card's bf16 peak.

Usage::

    python benchmarks/bench_gpu.py                      # CUDA: atrous+att and cnn_pool+att, multi-task, paper scale
    python benchmarks/bench_gpu.py --seconds 60 --json gpu.json
    python benchmarks/bench_gpu.py --device cpu --quick # a reduced model on the CPU in well under a minute

Each case is the real training step of ``caanet.training.CellTrainer`` (the cell's training split
as one tensor on the device, batches indexed there, bf16 autocast on CUDA with losses in float32,
fused Adam, ``cudnn.benchmark``) on a synthetic split of random log-mels, at the paper's widths
(64, 128, 256, 512 / CNN-d 64, 128), 320x64 inputs, batch 16, conditioning at layer 3. The FLOPs
of one step are counted by ``torch.utils.flop_counter.FlopCounterMode`` (``caanet.cost``), so
TFLOP/s = FLOPs per step x steps per second; the peak comes from ``caanet.cost.BF16_PEAK_TFLOPS``
(dense, no sparsity; an unknown card is reported as such). Warm-up iterations (cuDNN's algorithm
search) are not timed. Everything runs at most ``--seconds`` per case (default 90 s, so the two
cases stay within 5 minutes with start-up).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from caanet.cost import bf16_peak_tflops, train_step_flops  # noqa: E402
from caanet.runtime import keep_freed_memory  # noqa: E402
from caanet.spec import CellSpec  # noqa: E402
from caanet.training import CellData, CellTrainer, Clips, TrainConfig, _determinism  # noqa: E402

PAPER = {"channels": (64, 128, 256, 512), "device_channels": (64, 128), "input_shape": (320, 64), "batch": 16}
QUICK = {"channels": (8, 16, 16, 32), "device_channels": (8, 16), "input_shape": (64, 64), "batch": 8}


def synthetic_data(n_clips: int, input_shape: tuple[int, int], seed: int = 0) -> CellData:
    """A random, already normalised training/test split in the trainer's layout (10 scenes, 3 devices)."""
    rng = np.random.default_rng(seed)

    def clips(n):
        return Clips(x=rng.standard_normal((n, *input_shape), dtype=np.float32),
                     scene=rng.integers(0, 10, n).astype(np.int64), device=rng.integers(0, 3, n).astype(np.int64),
                     filename=np.array([f"audio/clip{i}-a.wav" for i in range(n)]),
                     identifier=np.array([f"loc{i % 50}" for i in range(n)]))

    train, test = clips(n_clips), clips(max(8, n_clips // 8))
    m = input_shape[1]
    return CellData(train=train, test=test, train_idx=np.arange(n_clips), val_idx=np.zeros(0, np.int64),
                    mean=np.zeros(m, np.float32), std=np.ones(m, np.float32),
                    scene_labels=[f"s{i}" for i in range(10)], device_labels=["a", "b", "c"])


def bench_case(topology: str, args, scale: dict, dev: torch.device) -> dict:
    spec = CellSpec("synthetic", topology, "att", "multi_task", cond_layer=3, fidelity="paper")
    cfg = TrainConfig(iterations=10**9, batch_size=scale["batch"], channels=scale["channels"],
                      device_channels=scale["device_channels"], amp=not args.fp32, deterministic=False,
                      lambda_check_every=10**9, log_every=10**9, checkpoint_every=10**9)
    data = synthetic_data(args.clips, scale["input_shape"])
    with _determinism(False, 0):
        trainer = CellTrainer(spec, cfg, data, dev, say=lambda line: None)
        flops = train_step_flops(trainer.model_cfg, cfg.batch_size)

        def sync():
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)

        for it in range(args.warmup):
            trainer.step(it)
        sync()
        start, done = time.perf_counter(), 0
        while done < args.iterations and time.perf_counter() - start < args.seconds:
            for _ in range(args.chunk):  # check the clock every few steps: each check would be a sync
                trainer.step(args.warmup + done)
                done += 1
            sync()
        elapsed = time.perf_counter() - start
    its = done / elapsed
    tflops = flops * its / 1e12
    res = {"topology": topology, "pooling": "att", "strategy": "multi_task", "cond_layer": 3,
           "channels": list(scale["channels"]), "input_shape": list(scale["input_shape"]), "batch": cfg.batch_size,
           "amp_bf16": bool(trainer.amp and dev.type == "cuda"), "iterations": done, "seconds": round(elapsed, 3),
           "iterations_per_s": its, "tflop_per_iteration": flops / 1e12, "achieved_tflops": tflops}
    peak = args.peak
    res["peak_bf16_tflops"] = peak
    res["share_of_peak"] = tflops / peak if peak else None
    share = f"{100 * res['share_of_peak']:.1f} % of the card's {peak:g} TFLOP/s bf16 peak" if peak else \
        "share of peak unknown (" + ("CPU" if dev.type == "cpu" else f"no bf16 peak on record for {args.device_name!r}") + ")"
    print(f"[{topology}+att multi-task, {'x'.join(map(str, scale['input_shape']))}, channels {scale['channels']}, "
          f"batch {cfg.batch_size}] {its:.2f} it/s, {flops / 1e9:.1f} GFLOP/iteration, {tflops:.3f} TFLOP/s achieved; "
          f"{share}", flush=True)
    del trainer
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return res


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--cases", default="atrous,cnn_pool", help="comma-separated topologies (attention, multi-task)")
    p.add_argument("--seconds", type=float, default=90.0, help="timed seconds per case at most")
    p.add_argument("--iterations", type=int, default=10**9, help="timed iterations per case at most")
    p.add_argument("--warmup", type=int, default=10, help="untimed iterations first (cuDNN autotuning)")
    p.add_argument("--chunk", type=int, default=10, help="iterations between clock checks")
    p.add_argument("--clips", type=int, default=1024, help="clips in the synthetic training split")
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast (the reference fidelity's float32)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--quick", action="store_true",
                   help="reduced widths and input (channels 8..32, 64x64, batch 8), 2 warm-up + 6 timed iterations")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        p.error("CUDA is not available on this machine: use --device cpu (with --quick for a short check)")
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as train_cell does
    scale = QUICK if args.quick else PAPER
    if args.quick:
        args.warmup, args.chunk, args.iterations, args.clips = 2, 2, min(args.iterations, 6), min(args.clips, 64)
    args.device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else (platform.processor() or platform.machine())
    args.peak = bf16_peak_tflops(args.device_name) if dev.type == "cuda" else None
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    print(f"bench_gpu: {args.device_name} ({dev}), torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", flush=True)
    results = {"device": str(dev), "device_name": args.device_name, "torch": torch.__version__,
               "date": time.strftime("%Y-%m-%d", time.gmtime()), "quick": args.quick,
               "cases": [bench_case(t, args, scale, dev) for t in args.cases.split(",")]}
    if args.json:
        from caanet.io import write_json_atomic

        write_json_atomic(args.json, results)
    return results


if __name__ == "__main__":
    main()
