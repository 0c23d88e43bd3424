"""What one training iteration of a cell costs, and the share of a GPU a cell's job declares.

* :func:`train_step_flops` counts the floating-point operations of one training step (forward and
  backward, all of CNN-d included) with :class:`torch.utils.flop_counter.FlopCounterMode` on the
  ``meta`` device: exact for the model as built, no memory, no arithmetic (milliseconds).
  Convolutions and matrix products count 2 FLOPs per multiply-add; element-wise work is not
  counted (it is memory-bound and small beside the convolutions).
* :func:`gpu_share` turns that into the percent of one card a training job asks for (the
  ``gpu_share`` resource of ``rules/train.smk``): a paper-scale full-resolution cell (about 8.6
  TFLOP per iteration at batch 16) takes a whole card; a pooled CNN (about 0.3 TFLOP) or a
  default-preset cell a small slice, so several share one card (``profiles/local-gpu``).
* :func:`trained_cells` / :func:`run_training_flops`: the FLOPs a finished run's training took, per
  cell ``train_step_flops`` of its model at its batch size times its iterations; with
  :func:`training_window` (first ``train_cell`` job's start to the last one's end) they give the
  run's share of the machine's compute limit (``benchmarks/bench_default_preset.sh``, issue 19).
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import math
import os
from pathlib import Path

from caanet.errors import ConfigError

# A step of this many FLOPs keeps a current data-centre GPU busy on its own (at 35 % of an H100's
# ~989 dense bf16 TFLOP/s, 2 TFLOP take ~6 ms: shorter steps leave it waiting on the host).
FULL_CARD_FLOPS = 2e12
MIN_SHARE = 5  # percent: even the smallest cell holds some memory and a CUDA context (~300-500 MB)


def train_step_flops(model_cfg, batch_size: int) -> int:
    """FLOPs of one training step (forward + backward) of ``model_cfg`` (a ModelConfig) at ``batch_size``.

    Raises ConfigError for a batch size below 1.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConfigError(f"batch_size={batch_size!r} must be an integer >= 1")
    return _flops(json.dumps(model_cfg.to_dict(), sort_keys=True), batch_size)


@functools.lru_cache(maxsize=256)
def _flops(cfg_json: str, batch_size: int) -> int:
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    from caanet.models import ModelConfig, build_model

    cfg = ModelConfig(**json.loads(cfg_json))
    if cfg.device_source == "oracle":
        # teacher forcing adds only the conditioning bias (n_devices x channels per clip) to the plain
        # network, and its input check reads the device labels, which fake tensors do not have; the
        # plain network has no unseen-device policy (an oracle cell of unseen devices has one)
        cfg = dataclasses.replace(cfg, device_source="none", cond_layer=None, unseen_device=None)
    model = build_model(cfg).train()  # real parameters (megabytes at the paper's widths)
    counter = FlopCounterMode(display=False)
    # fake activations: shapes and dtypes propagate, nothing is allocated or computed
    with FakeTensorMode(allow_non_fake_inputs=True):
        x = torch.empty(batch_size, *cfg.input_shape)
        with counter:
            out = model(x)
            loss = out.scene.float().sum() + (out.device.float().sum() if out.device is not None else 0)
            loss.backward()
    return int(counter.get_total_flops())


def gpu_share(flops_per_step: float, *, full_card_flops: float = FULL_CARD_FLOPS, step: int = 5) -> int:
    """Percent of one GPU (``MIN_SHARE``..100, a multiple of ``step``) a job of ``flops_per_step`` asks for.

    ``100 * flops / full_card_flops`` rounded up, so a job at or above ``full_card_flops`` per
    iteration gets a card to itself and smaller ones share.
    """
    if not flops_per_step >= 0 or not full_card_flops > 0:
        raise ConfigError(f"gpu_share: flops_per_step={flops_per_step!r} and full_card_flops={full_card_flops!r} "
                          "must be >= 0 and > 0")
    share = math.ceil(100.0 * flops_per_step / full_card_flops / step) * step
    return int(min(100, max(MIN_SHARE, share)))


# Dense bf16 tensor-core peaks without sparsity, TFLOP/s, from the vendors' data sheets; matched
# against torch.cuda.get_device_name() (first key contained in the name, case-insensitive).
BF16_PEAK_TFLOPS = {
    "H200": 989.0,  # "NVIDIA H200"
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,  # the SXM card reports itself as "NVIDIA H100 80GB HBM3"
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "A800": 312.0,
    "A30": 165.0,
    "A10G": 70.0,
    "A10": 125.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "RTX 6000 Ada": 364.0,
    "RTX A6000": 155.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
    "V100": None,  # no bf16 tensor cores
    "T4": None,
}


def bf16_peak_tflops(device_name: str) -> float | None:
    """The card's dense bf16 peak in TFLOP/s from :data:`BF16_PEAK_TFLOPS`, None if unknown or without bf16."""
    name = device_name.lower()
    for key in sorted(BF16_PEAK_TFLOPS, key=len, reverse=True):  # "H100 SXM" before "H100"
        if key.lower() in name:
            return BF16_PEAK_TFLOPS[key]
    return None


# --------------------------------------------------------------------------------------------------
# What a finished run's training cost
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainedCell:
    """One trained cell folder ``cells/{dataset}/{cell}/seed{seed}``: its model (``model_config``, a
    :class:`caanet.models.ModelConfig`), ``batch_size`` (from ``model.pt``'s ``train_config``),
    ``iterations`` and ``train_seconds`` (the training loop's, from ``evaluation.json``) and
    ``step_flops`` (:func:`train_step_flops`)."""

    dataset: str
    cell: str
    seed: int
    model_config: object
    batch_size: int
    iterations: int
    train_seconds: float | None
    step_flops: int

    @property
    def flops(self) -> int:
        """FLOPs of the cell's training: ``step_flops * iterations``."""
        return self.step_flops * self.iterations


def trained_cells(results_root: str | os.PathLike = "results") -> list[TrainedCell]:
    """Every trained cell of a run below ``results_root``, sorted by dataset, cell and seed.

    A cell is trained when its folder holds ``evaluation.json`` (published last by a training job);
    a folder without it (a job running, abandoned or failed) is not counted. From ``evaluation.json``:
    ``iterations`` (the iterations trained, an integer >= 0) and ``train_seconds``; from ``model.pt``
    (:func:`caanet.modelfile.load_model_file`): the model configuration and ``train_config.batch_size``.
    Only the training steps count: evaluations (CNN-d's validation for the lambda rule, the test set at
    the end) and the first step's set-up are left out. Raises ConfigError naming the file and the key
    for a trained cell without ``model.pt``, an unreadable ``evaluation.json`` or a missing or bad
    ``iterations`` / ``batch_size``.
    """
    from caanet import paths
    from caanet.modelfile import load_model_file

    pattern = paths.results_file(paths.cell_file("evaluation"), results_root, dataset="*", cell="*", seed="*")
    cells = []
    for ev_path in sorted(glob.glob(pattern)):
        dataset, cell, seed, _ = paths.parse_cell_file(ev_path)
        folder = Path(ev_path).parent
        try:
            evaluation = json.loads(Path(ev_path).read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{ev_path}: not readable JSON ({e})") from None
        iterations = evaluation.get("iterations") if isinstance(evaluation, dict) else None
        if not isinstance(iterations, int) or isinstance(iterations, bool) or iterations < 0:
            raise ConfigError(f"{ev_path}: key 'iterations' is {iterations!r}, expected an integer >= 0")
        model_path = folder / paths.CELL_FILES["model"]
        if not model_path.is_file():
            raise ConfigError(f"{model_path}: missing; a trained cell's folder holds its model file beside {ev_path}")
        model_file = load_model_file(model_path)
        batch_size = (model_file.train_config or {}).get("batch_size")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError(f"{model_path}: key 'train_config.batch_size' is {batch_size!r}, expected an integer >= 1")
        seconds = evaluation.get("train_seconds")
        cells.append(TrainedCell(dataset, cell, seed, model_file.config, batch_size, iterations,
                                 float(seconds) if isinstance(seconds, (int, float)) else None,
                                 train_step_flops(model_file.config, batch_size)))
    return cells


def run_training_flops(results_root: str | os.PathLike = "results") -> int:
    """FLOPs of all training of the run below ``results_root``: the sum of :func:`trained_cells`' ``flops``."""
    return sum(c.flops for c in trained_cells(results_root))


def training_window(results_root: str | os.PathLike = "results") -> tuple[float, float, int]:
    """``(start, end, n_jobs)`` of the run's ``train_cell`` jobs, in seconds since the epoch.

    Each job's benchmark file (``benchmarks/train_cell/{dataset}/{cell}/seed{n}.tsv``) gives its wall
    seconds ``s`` (last row) and, by its modification time, its end: Snakemake writes the file when it
    has finished the job (the cell's outputs carry the same time; the job's log was last written 0.1-0.7 s
    earlier). ``end`` is the latest end, ``start`` the earliest ``end - s``: the wall time from the first
    training job's start to the last one's end, other jobs that ran in between included. Raises
    ConfigError when there is no benchmark file, or naming a file without a numeric ``s``.
    """
    import pandas as pd

    from caanet import paths

    pattern = paths.results_file(paths.benchmark("train_cell", paths.CELL_KEY), results_root,
                                 dataset="*", cell="*", seed="*")
    files = sorted(glob.glob(pattern))
    if not files:
        raise ConfigError(f"no train_cell benchmark files match {pattern}")
    starts, ends = [], []
    for f in files:
        try:
            seconds = float(pd.read_csv(f, sep="\t")["s"].iloc[-1])
        except (OSError, ValueError, KeyError, IndexError, pd.errors.ParserError) as e:
            raise ConfigError(f"{f}: no wall seconds in column 's' ({type(e).__name__}: {e})") from None
        if not math.isfinite(seconds) or seconds < 0:
            raise ConfigError(f"{f}: column 's' is {seconds!r}, expected seconds >= 0")
        end = os.path.getmtime(f)
        starts.append(end - seconds)
        ends.append(end)
    return min(starts), max(ends), len(files)


def compute_share(flops: float, seconds: float, cores: int, gflops_per_core: float) -> float:
    """The share of the compute limit: ``flops / (seconds * cores * gflops_per_core * 1e9)``.

    ``gflops_per_core``: the machine's one-thread matmul speed. Raises ConfigError unless ``flops >= 0``,
    ``seconds > 0``, ``cores >= 1`` and ``gflops_per_core > 0``."""
    if not (flops >= 0 and seconds > 0 and cores >= 1 and gflops_per_core > 0):
        raise ConfigError(f"compute_share: flops={flops!r} must be >= 0, seconds={seconds!r} > 0, cores={cores!r} "
                          f">= 1 and gflops_per_core={gflops_per_core!r} > 0")
    return flops / (seconds * cores * gflops_per_core * 1e9)
