"""Training-step and evaluation cost: caanet vs the same step written "the authors' way".

Usage::

    python benchmarks/bench_train_step.py            # atrous+att and cnn_pool+att, multi-task, cond layer 3
    python benchmarks/bench_train_step.py --quick    # 1 warm-up + 1 step, 1 evaluation batch
    python benchmarks/bench_train_step.py --cases cnn_pool --json out.json

Both sides train the same multi-task model (attention pooling, CNN-d, conditioning at layer 3)
at batch 16 on 320x64 inputs with Adam, in float32 on the CPU with ``--threads`` threads.

* "authors' way" (:class:`PlainMultiTask`, written here for the comparison): a per-block
  conv/bn/relu forward in the default memory format, the conditioning as a 1x1 conv over the
  device one-hot expanded to the whole map, and the evaluation of the whole training set and the
  held-out fold every 100 iterations (``--their-eval-clips`` forward passes, eval mode, no_grad).
* caanet: channels-last convolutions, the conditioning as a per-sample bias, evaluation with a
  BatchNorm-folded copy under ``inference_mode``; during training only CNN-d runs on the
  validation split every 100 iterations (the lambda rule, ``--our-val-clips``), and the test set
  is evaluated once at the end (``--test-clips`` over ``--iterations``).

Reported per case: seconds per step, seconds per evaluated clip, and the amortised wall time per
iteration including the evaluations (the figure that decides the wall time of a table cell).
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import sys
from pathlib import Path
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's caanet, not an installed one

from caanet.models import ModelConfig, build_model  # noqa: E402


def matmul_gflops(runs: int = 7, products: int = 20, n: int = 1024, clock=time.perf_counter) -> float:
    """Median GFLOP/s of ``runs`` timings of ``products`` one-thread float32 ``n x n`` matmuls: the
    machine's speed, printed beside every time so figures from different machines compare.
    ``clock``: wall time by default; ``time.process_time`` gives the figure in this process's CPU
    time (what benchmarks timed in CPU time print beside theirs)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(3):
            a @ b
        rates = []
        for _ in range(runs):
            t = clock()
            for _ in range(products):
                a @ b
            rates.append(products * 2 * n**3 / (clock() - t) / 1e9)
        return statistics.median(rates)
    finally:
        torch.set_num_threads(before)

N_CLASSES, N_DEVICES = 10, 3
_CLOCK = time.perf_counter  # --clock cpu: time.process_time (CPU seconds of all threads, less sensitive to load)
CHANNELS, DEVICE_CHANNELS = (64, 128, 256, 512), (64, 128)


class PlainMultiTask(nn.Module):
    """The multi-task attention model as a plain, literal per-block forward (the baseline)."""

    def __init__(self, topology: str, cond_layer: int):
        super().__init__()
        self.pool = topology == "cnn_pool"
        dilations = (1, 2, 4, 8) if topology == "atrous" else (1, 1, 1, 1)
        ins = (1, *CHANNELS[:-1])
        self.convs = nn.ModuleList(
            nn.Conv2d(i, o, 5, padding=2 * d, dilation=d, bias=False) for i, o, d in zip(ins, CHANNELS, dilations)
        )
        self.bns = nn.ModuleList(nn.BatchNorm2d(o) for o in CHANNELS)
        self.cond_layer = cond_layer
        self.cond = nn.Conv2d(N_DEVICES, CHANNELS[cond_layer - 1], 1)
        self.cla = nn.Conv2d(CHANNELS[-1], N_CLASSES, 1)
        self.att = nn.Conv2d(CHANNELS[-1], N_CLASSES, 1)
        self.dconvs = nn.ModuleList(
            nn.Conv2d(i, o, 5, padding=2, bias=False) for i, o in zip((1, *DEVICE_CHANNELS[:-1]), DEVICE_CHANNELS)
        )
        self.dbns = nn.ModuleList(nn.BatchNorm2d(o) for o in DEVICE_CHANNELS)
        self.dfc = nn.Linear(DEVICE_CHANNELS[-1], N_DEVICES)

    def forward(self, x):
        batch, frames, mels = x.shape
        x = x.view(batch, 1, frames, mels)
        d = x
        for conv, bn in zip(self.dconvs, self.dbns):
            d = F.max_pool2d(F.relu(bn(conv(d))), 2)
        device = F.log_softmax(self.dfc(d.amax(dim=(2, 3))), dim=-1)
        one_hot = torch.eye(N_DEVICES)[device.argmax(dim=1)]
        h = x
        for layer, (conv, bn) in enumerate(zip(self.convs, self.bns), start=1):
            y = conv(h)
            if layer == self.cond_layer:
                expanded = one_hot[:, :, None, None].expand(-1, -1, y.shape[2], y.shape[3])
                y = y + self.cond(expanded)
            h = F.relu(bn(y))
            if self.pool:
                h = F.max_pool2d(h, 2)
        cla = F.log_softmax(self.cla(h), dim=1).flatten(2)
        att = torch.clamp(torch.sigmoid(self.att(h)) + 0.1, 0.1, 0.9).flatten(2)
        scene = (att / att.sum(dim=2, keepdim=True) * cla).sum(dim=2)
        return scene, device


def _interleaved(fns: dict, n: int, warmup: int) -> dict[str, list[float]]:
    """Run every function ``warmup`` times, then ``n`` rounds alternating between them (so load
    from other processes hits all of them alike); returns the times per name."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(n):
        for name, fn in fns.items():
            t = _CLOCK()
            fn()
            times[name].append(_CLOCK() - t)
    return times


def _train_step(forward, optimizer, x, y, d, lam=1.0):
    def step():
        optimizer.zero_grad(set_to_none=True)
        scene, device = forward(x)
        loss = F.nll_loss(scene, y) + lam * F.nll_loss(device, d)
        loss.backward()
        optimizer.step()

    return step


def bench_case(topology: str, args) -> dict:
    torch.manual_seed(0)
    b = args.batch
    x = torch.randn(b, 320, 64)
    y, d = torch.randint(0, N_CLASSES, (b,)), torch.randint(0, N_DEVICES, (b,))

    ours = build_model(
        ModelConfig(topology, "att", device_source="predicted", cond_layer=3, fidelity="reference")
    ).train()
    theirs = PlainMultiTask(topology, cond_layer=3).train()

    def ours_forward(inp):
        out = ours(inp)
        return out.scene, out.device

    their_opt = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    our_opt = torch.optim.Adam(ours.parameters(), lr=1e-3)
    steps = {"theirs": _train_step(theirs, their_opt, x, y, d), "ours": _train_step(ours_forward, our_opt, x, y, d)}
    res = {"topology": topology, "pooling": "att", "strategy": "multi_task", "cond_layer": 3, "batch": b}
    for name, times in _interleaved(steps, args.steps, args.warmup).items():
        res[f"{name}_step_s"] = statistics.median(times)
        res[f"{name}_step_all_s"] = times
        print(f"[{topology}] {name} train step: {res[f'{name}_step_s']:.3f} s  {['%.3f' % t for t in times]}", flush=True)

    # evaluation cost per clip: theirs in eval mode under no_grad, ours BatchNorm-folded under inference_mode
    theirs.eval()
    fused = ours.inference_copy()
    x_cl = x.unsqueeze(1).contiguous(memory_format=torch.channels_last)

    def their_eval():
        with torch.no_grad():
            theirs(x)

    def our_eval():
        with torch.inference_mode():
            fused(x)

    def our_device_eval():
        with torch.inference_mode():
            fused.device_net(x_cl)

    evals = {"theirs_eval": their_eval, "ours_eval": our_eval, "ours_device_eval": our_device_eval}
    for name, times in _interleaved(evals, args.eval_batches, 1).items():
        res[f"{name}_clip_s"] = statistics.median(times) / b
        print(f"[{topology}] {name} per clip: {res[f'{name}_clip_s'] * 1e3:.1f} ms", flush=True)

    res["theirs_per_iteration_s"] = res["theirs_step_s"] + args.their_eval_clips / 100 * res["theirs_eval_clip_s"]
    res["ours_per_iteration_s"] = (
        res["ours_step_s"]
        + args.our_val_clips / 100 * res["ours_device_eval_clip_s"]
        + args.test_clips / args.iterations * res["ours_eval_clip_s"]
    )
    res["step_ratio"] = res["ours_step_s"] / res["theirs_step_s"]
    res["wall_ratio"] = res["ours_per_iteration_s"] / res["theirs_per_iteration_s"]
    print(
        f"[{topology}] per iteration incl. evaluations: theirs {res['theirs_per_iteration_s']:.3f} s, "
        f"ours {res['ours_per_iteration_s']:.3f} s; step ratio {res['step_ratio']:.2f} (target <= 1), "
        f"wall ratio {res['wall_ratio']:.2f} (target <= 0.33)",
        flush=True,
    )
    return res


def bench_preset_networks(args) -> list[dict]:
    """Iterations/s of the preset's own networks, per topology, on the real trainer step.

    For each topology: the attention multi-task cell conditioned at layer 3 (the largest network of
    the topology in the grid) at the preset's widths, batch size and input size (its datasets' clip
    length). ``trainer``: ``caanet.training.CellTrainer.step`` on a synthetic split, as a job runs it
    (deterministic mode, batch taken on the device from the per-epoch order, fused Adam, losses read
    back once); ``model``: forward + backward + Adam on a fixed batch, nothing else. Their
    difference is the host work per step. ``top_ops``: the operators with the most self CPU time in
    a few profiled steps (torch.profiler), which say what dominates a step.
    """
    import yaml
    from torch.profiler import ProfilerActivity, profile

    from caanet.config import resolve
    from caanet.optim import Adam
    from caanet.spec import CellSpec
    from caanet.training import CellTrainer, TrainConfig, _determinism
    from caanet.workflow_support import feature_params, train_config, train_settings

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_gpu import synthetic_data

    from caanet.runtime import keep_freed_memory

    keep_freed_memory()  # as train_cell does (benchmarks/bench_malloc.py measures what it changes)
    preset = resolve({**yaml.safe_load((REPO / "config.yaml").read_text()), "preset": args.preset})
    cfg = train_config(train_settings(preset), preset["name"])
    cfg = TrainConfig.from_dict({**cfg.to_dict(), "lambda_check_every": 10**9, "log_every": 10**9})
    dataset = preset["tables"]["table1"]["dataset"]
    fp = feature_params(preset, dataset)
    shape = (fp.n_frames, fp.n_mels)
    steps, warm = (5, 2) if args.quick else (args.preset_steps, 20)
    rows = []
    for topology in args.cases.split(","):
        spec = CellSpec(dataset, topology, "att", "multi_task", cond_layer=3)
        data = synthetic_data(256, shape)
        with _determinism(True, 0):
            trainer = CellTrainer(spec, cfg, data, torch.device("cpu"), say=lambda line: None)
            model = build_model(trainer.model_cfg).train()
            opt = Adam(model.parameters(), lr=cfg.lr)
            x = torch.from_numpy(data.train.x[:cfg.batch_size].copy())
            y, d = torch.randint(0, 10, (cfg.batch_size,)), torch.randint(0, 3, (cfg.batch_size,))
            bare = _train_step(lambda inp: tuple(model(inp)[:2]), opt, x, y, d)
            it = iter(range(10**9))
            times = _interleaved({"trainer": lambda: trainer.step(next(it)), "model": bare}, steps, warm)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(3):
                    trainer.step(next(it))
        ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in ops) or 1
        row = {"topology": topology, "pooling": "att", "strategy": "multi_task", "cond_layer": 3,
               "channels": list(cfg.channels), "input_shape": list(shape), "batch": cfg.batch_size,
               "trainer_it_per_s": 1 / statistics.median(times["trainer"]),
               "model_it_per_s": 1 / statistics.median(times["model"]),
               "ops_per_step": sum(e.count for e in ops) / 3,
               "top_ops": [[e.key, round(e.self_cpu_time_total / total, 3)] for e in ops[:5]]}
        row["host_share"] = max(0.0, 1 - row["trainer_it_per_s"] / row["model_it_per_s"])
        rows.append(row)
        top = ", ".join(f"{k} {100 * v:.0f}%" for k, v in row["top_ops"])
        print(f"[{args.preset} {topology}+att multi-task, {shape[0]}x{shape[1]}, channels {list(cfg.channels)}, "
              f"batch {cfg.batch_size}, {args.threads} thread(s)] trainer {row['trainer_it_per_s']:.1f} it/s, "
              f"bare model {row['model_it_per_s']:.1f} it/s (host work {100 * row['host_share']:.0f}% of a step); "
              f"{row['ops_per_step']:.0f} operator calls per step; top: {top}", flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="atrous,cnn_pool", help="comma-separated topologies")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=2, help="measured training steps")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--eval-batches", type=int, default=2)
    p.add_argument("--their-eval-clips", type=int, default=10080, help="clips the authors evaluate per 100 iterations")
    p.add_argument("--our-val-clips", type=int, default=720, help="validation clips CNN-d sees per 100 iterations")
    p.add_argument("--test-clips", type=int, default=2880, help="test clips evaluated once at the end")
    p.add_argument("--iterations", type=int, default=15000)
    p.add_argument("--quick", action="store_true", help="1 warm-up + 1 step, 1 evaluation batch")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed seconds; cpu: process CPU seconds (robust to other load; use with --threads 1)",
    )
    p.add_argument("--preset-networks", action="store_true",
                   help="instead: iterations/s of the --preset's own networks per topology on one thread")
    p.add_argument("--preset", default="default", help="config.yaml preset for --preset-networks")
    p.add_argument("--preset-steps", type=int, default=100, help="timed steps per topology for --preset-networks")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.eval_batches = 1, 1, 1
    global _CLOCK
    _CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):  # only settable once per process
        torch.set_num_interop_threads(1)
    if args.preset_networks:
        if args.cases == "atrous,cnn_pool":
            args.cases = "cnn_pool,cnn_nopool,atrous"
        results = {"torch": torch.__version__, "threads": args.threads, "clock": args.clock,
                   "matmul_gflops_1thread": matmul_gflops() if not args.quick else None,
                   "preset_networks": bench_preset_networks(args)}
        if results["matmul_gflops_1thread"]:
            print(f"one-thread float32 1024x1024 matmul: {results['matmul_gflops_1thread']:.1f} GFLOP/s (same run)")
        if args.json:
            from caanet.io import write_json_atomic

            write_json_atomic(args.json, results)
        return results
    results = {
        "torch": torch.__version__,
        "threads": args.threads,
        "clock": args.clock,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.processor() or platform.machine(),
        "args": vars(args),
        "cases": [bench_case(t, args) for t in args.cases.split(",")],
    }
    if args.json:
        from caanet.io import write_json_atomic

        write_json_atomic(args.json, results)
    return results


if __name__ == "__main__":
    main()
