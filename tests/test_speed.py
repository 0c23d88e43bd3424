"""The fast training path (issue 10): Adam without torch.optim's dynamo import, the per-epoch batch
order on the device, FLOP counts and GPU shares, the core cap of local runs, and the benchmarks
kept runnable (their figures are measured by benchmarks/, never here)."""

import importlib.util
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from caanet.cost import BF16_PEAK_TFLOPS, MIN_SHARE, bf16_peak_tflops, gpu_share, train_step_flops
from caanet.data.loader import batch_indices
from caanet.errors import ConfigError
from caanet.models import ModelConfig, build_model
from caanet.optim import Adam
from caanet.training import BatchOrder, ClipTensors, Clips, _batch
from caanet.workflow_support import capped_cores, shard_gres

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(channels=(4, 8, 8, 16), device_channels=(4, 8), input_shape=(32, 16))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- Adam


@pytest.mark.parametrize("fused", [False, True])
def test_adam_matches_torch_optim_adam_bit_for_bit(fused):
    torch.manual_seed(0)
    cfg = ModelConfig("cnn_pool", "att", device_source="predicted", cond_layer=2, **SMALL)
    ours_model, theirs_model = build_model(cfg), build_model(cfg)
    theirs_model.load_state_dict(ours_model.state_dict())
    ours = Adam(ours_model.parameters(), lr=3e-3, betas=(0.9, 0.99), eps=1e-7, fused=fused)
    theirs = torch.optim.Adam(theirs_model.parameters(), lr=3e-3, betas=(0.9, 0.99), eps=1e-7, fused=fused or None)
    x, y, d = torch.randn(8, 32, 16), torch.randint(0, 10, (8,)), torch.randint(0, 3, (8,))
    for step in range(4):
        for model, opt in ((ours_model, ours), (theirs_model, theirs)):
            for group in opt.param_groups:
                group["lr"] = 3e-3 * 0.5 ** step  # a schedule, set the way the trainer sets it
            opt.zero_grad(set_to_none=True)
            out = model(x)
            (torch.nn.functional.nll_loss(out.scene, y) + torch.nn.functional.nll_loss(out.device, d)).backward()
            opt.step()
    for a, b in zip(ours_model.parameters(), theirs_model.parameters()):
        assert torch.equal(a, b)
    # the state dicts have torch's layout: each loads the other's
    again = Adam(ours_model.parameters(), lr=3e-3, fused=fused)
    again.load_state_dict(theirs.state_dict())
    for i, st in ours.state.items():
        assert torch.equal(again.state[i]["exp_avg"], st["exp_avg"]) and float(again.state[i]["step"]) == 4.0
    torch.optim.Adam(theirs_model.parameters(), lr=3e-3).load_state_dict(ours.state_dict())


def test_adam_rejects_bad_settings_and_foreign_state():
    p = [torch.zeros(3, requires_grad=True)]
    with pytest.raises(ConfigError, match="no parameters"):
        Adam([])
    with pytest.raises(ConfigError, match="lr=-1"):
        Adam(p, lr=-1)
    with pytest.raises(ConfigError, match="2 parameters"):
        Adam(p).load_state_dict({"state": {}, "param_groups": [{"params": [0, 1]}]})


def test_training_imports_neither_dynamo_nor_scipy_signal(tiny_cache, tmp_path):
    # torch.optim and torch.use_deterministic_algorithms import torch._dynamo / torch._inductor
    # (1-2 s per job); the cache reader imported scipy.signal (0.4 s). A fresh process proves it.
    code = (
        "import sys; from caanet.spec import CellSpec; from caanet.training import TrainConfig, train_cell\n"
        f"train_cell({str(tiny_cache)!r}, CellSpec.from_id('cnn_pool-max-multi_task-L1', dataset='tiny'),\n"
        "           TrainConfig(iterations=3, batch_size=4, channels=(2, 4, 4, 8), device_channels=(2, 4),\n"
        "                       lambda_check_every=2, val_fraction=0.2), "
        f"{str(tmp_path / 'out')!r}, threads=1, log=lambda s: None)\n"
        "heavy = [m for m in ('torch._dynamo', 'torch._inductor', 'scipy.signal', 'scipy.fft') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]


# ---------------------------------------------------------------- the workflow's parse

PARSE_MODULES = (
    # rules/common.smk's imports
    "caanet.config", "caanet.provenance", "caanet.grid", "caanet.methods", "caanet.paths", "caanet.rerun",
    "caanet.trainserver", "caanet.training", "caanet.workflow_support", "caanet.data.manifest", "caanet.vocab",
    # what the rules' parse-time calls import (ws.check_preset, ws.train_options, grid.holds_validation)
    "caanet.training.config", "caanet.fidelity", "caanet.holdout", "caanet.spec",
)
"""The modules every Snakemake parse imports. Not here: caanet.features and caanet.data.synth/layout
(ws.check_preset, ws.feature_params, ws.scene_labels), which import pandas at module level."""


def _fresh_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "/usr/bin:/bin")})


def test_the_workflows_parse_modules_import_no_pandas_scipy_or_torch():
    """Every ``snakemake`` call (dry runs included) imports these at parse time; pandas and scipy.stats
    cost ~0.5-1 s (caanet.grid imported both before the aggregation moved to caanet.aggregate)."""
    code = (f"import importlib, sys\nfor m in {PARSE_MODULES!r}: importlib.import_module(m)\n"
            "heavy = [m for m in ('pandas', 'scipy', 'torch') if m in sys.modules]\nassert not heavy, heavy\n")
    proc = _fresh_python(code, REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_reading_layers_csv_imports_no_scipy(tmp_path):
    """Once Table I's checkpoint has run, every parse reads layers.csv (caanet.aggregate.read_layers):
    scipy.stats (~0.6 s) is imported only where a confidence interval is computed."""
    (tmp_path / "layers.csv").write_text("topology,pooling,cond_layer,acc_mean,selected_on\natrous,att,3,60.0,test\n",
                                         encoding="utf-8")
    code = ("import sys\nfrom caanet.aggregate import read_layers\n"
            f"assert read_layers({str(tmp_path / 'layers.csv')!r}) == {{('atrous', 'att'): 3}}\n"
            "heavy = [m for m in ('scipy', 'torch') if m in sys.modules]\nassert not heavy, heavy\n")
    proc = _fresh_python(code, REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_a_dry_run_imports_no_scipy_torch_or_aggregation(tmp_path):
    """``snakemake -n all`` on the tiny preset, in a fresh process on a copy of the checkout: neither scipy
    (caanet.grid's scipy.stats, caanet.data.synth's scipy.signal) nor torch nor caanet.aggregate (read
    only once Table I's checkpoint has run) is imported. Pandas is: Snakemake's SLURM plugin and
    caanet.features import it."""
    work = tmp_path / "caanet"
    shutil.copytree(REPO, work, ignore=shutil.ignore_patterns(".git", ".snakemake", "results", "reports",
                                                              "__pycache__", "*.egg-info", ".pytest_cache"))
    code = ("import sys\nsys.argv = ['snakemake', '-n', '--cores', '1', 'all', '--config', 'preset=tiny']\n"
            "from snakemake.cli import main\ntry:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
            "print('EXIT', code, [m for m in ('scipy', 'torch', 'caanet.aggregate') if m in sys.modules])\n")
    proc = _fresh_python(code, work)
    assert "EXIT 0 []" in proc.stdout, (proc.stdout[-2000:], proc.stderr[-3000:])


# ---------------------------------------------------------------- batches on the device


@pytest.mark.parametrize("n, batch_size", [(37, 8), (5, 8), (16, 16)])
def test_batch_order_gives_exactly_the_batches_of_batch_indices(n, batch_size):
    train_idx = np.arange(3, 3 + 2 * n, 2)  # positions of the training clips among all clips
    order = BatchOrder(train_idx, batch_size, seed=7, dev=torch.device("cpu"))
    for it in range(3 * n // batch_size + 5):  # several epochs, batches straddling their ends
        expected = train_idx[batch_indices(n, batch_size, 7, it)]
        got = order(it)
        assert got.dtype == torch.int64 and got.tolist() == expected.tolist(), it


def test_clip_tensors_share_memory_on_cpu_and_index_like_numpy():
    rng = np.random.default_rng(0)
    clips = Clips(x=rng.standard_normal((6, 4, 3), dtype=np.float32), scene=np.arange(6) % 3,
                  device=np.arange(6) % 2, filename=np.array([f"f{i}" for i in range(6)]),
                  identifier=np.array([f"l{i // 2}" for i in range(6)]))
    t = ClipTensors.of(clips, torch.device("cpu"))
    assert t.x.data_ptr() == clips.x.__array_interface__["data"][0]  # no copy on the CPU
    assert len(t) == 6 and list(t.identifier) == list(clips.identifier)
    pos = np.array([4, 0, 4])
    for a, b in zip(_batch(t, torch.tensor(pos), torch.device("cpu")), _batch(clips, pos, torch.device("cpu"))):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- FLOPs and GPU shares


def test_train_step_flops_counts_the_convolutions():
    # one 5x5 conv 1->4 on 32x16 plus the 1x1 attention/class convs of a tiny cnn_nopool... checked
    # against the hand count of the scene backbone: forward 2*k*k*cin*cout*H*W per clip, and the
    # backward twice that (input and weight gradients), except the first conv's input gradient
    cfg = ModelConfig("cnn_nopool", "avg", channels=(4, 8, 8, 16), device_channels=(4, 8), input_shape=(32, 16))
    flops = train_step_flops(cfg, 2)
    hw, k2 = 32 * 16, 25
    convs = [(1, 4), (4, 8), (8, 8), (8, 16)]
    fwd = sum(2 * k2 * ci * co * hw for ci, co in convs) * 2
    bwd = 2 * fwd - 2 * k2 * 1 * 4 * hw * 2  # no gradient for the input
    head = flops - fwd - bwd
    assert 0 <= head < 0.01 * flops  # the head (a linear layer on pooled features) is negligible
    assert train_step_flops(cfg, 4) == 2 * flops  # linear in the batch
    # teacher forcing: the plain network plus a per-clip bias (counted as the plain network)
    oracle = ModelConfig("cnn_nopool", "avg", device_source="oracle", cond_layer=2, channels=(4, 8, 8, 16),
                         device_channels=(4, 8), input_shape=(32, 16))
    assert train_step_flops(oracle, 2) == flops


def test_paper_scale_flops_and_shares():
    full = ModelConfig("atrous", "att", device_source="predicted", cond_layer=3)
    pooled = ModelConfig("cnn_pool", "att", device_source="predicted", cond_layer=3)
    f_full, f_pool = train_step_flops(full, 16), train_step_flops(pooled, 16)
    assert 8.4e12 < f_full < 8.8e12  # the 8.6 TFLOP per iteration at batch 16
    assert gpu_share(f_full) == 100 and gpu_share(f_pool) <= 25
    assert gpu_share(0) == MIN_SHARE and gpu_share(1e15) == 100 and gpu_share(0.31e12) == 20
    with pytest.raises(ConfigError):
        gpu_share(-1)


def test_shard_gres_and_core_cap():
    assert shard_gres(15, 10) == "shard:2" and shard_gres(100, 10) == "shard:10" and shard_gres(5, 100) == "shard:5"
    assert shard_gres(15, 0) == "" and shard_gres(1, 4) == "shard:1"
    assert capped_cores(8, available=2) == 2 and capped_cores(1, available=2) == 1 and capped_cores(None) is None


def test_bf16_peaks_by_device_name():
    assert bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0  # SXM
    assert bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bf16_peak_tflops("NVIDIA H200") == 989.0
    assert bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0 and bf16_peak_tflops("NVIDIA A10G") == 70.0
    assert bf16_peak_tflops("Tesla V100-SXM2-32GB") is None and bf16_peak_tflops("Some Future GPU") is None
    assert all(v is None or v > 0 for v in BF16_PEAK_TFLOPS.values())


# ---------------------------------------------------------------- the benchmarks stay runnable


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_gpu_quick_runs_on_cpu(tmp_path, capsys):
    res = _load("bench_gpu").main(["--device", "cpu", "--quick", "--threads", "1", "--json", str(tmp_path / "g.json")])
    assert [c["topology"] for c in res["cases"]] == ["atrous", "cnn_pool"]
    for c in res["cases"]:
        assert c["iterations"] == 6 and c["iterations_per_s"] > 0 and c["amp_bf16"] is False
        assert math.isclose(c["achieved_tflops"], c["tflop_per_iteration"] * c["iterations_per_s"])
        assert c["share_of_peak"] is None
    assert "share of peak unknown (CPU)" in capsys.readouterr().out
    assert (tmp_path / "g.json").is_file()


def test_bench_train_step_default_preset_quick(tmp_path):
    res = _load("bench_train_step").main(["--preset-networks", "--quick", "--threads", "1"])
    rows = res["preset_networks"]
    assert {r["topology"] for r in rows} == {"cnn_pool", "cnn_nopool", "atrous"}
    for r in rows:
        assert r["trainer_it_per_s"] > 0 and r["model_it_per_s"] > 0 and r["top_ops"]


def test_window_names_skipping_scipy_are_scipy_windows():
    import scipy.signal

    from caanet.features import _PLAIN_WINDOWS

    for name in _PLAIN_WINDOWS:
        scipy.signal.get_window(name, 16, fftbins=False)


def test_keep_freed_memory_sets_glibc_thresholds_once():
    import platform

    from caanet.runtime import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() is first  # once per process
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert first is True


def test_bench_malloc_runs(capsys):
    res = _load("bench_malloc").main(["--rounds", "1", "--steps", "2", "--topologies", "cnn_pool"])
    med = res["cnn_pool"]["median_ms"]
    assert med["glibc default"] > 0 and med["keep_freed_memory"] > 0 and res["matmul_gflops_1thread"] > 0
    assert "time saved" in capsys.readouterr().out
