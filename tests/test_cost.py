"""caanet.cost: the FLOPs a finished run's training took, the wall-time window of its training jobs and the
share of the compute limit (issue 19, item 2), against hand counts on small folders written here."""

import json
import os

import pytest
import torch
from conftest import TINY_PARAMS

from caanet.cost import TrainedCell, compute_share, run_training_flops, trained_cells, train_step_flops, training_window
from caanet.errors import ConfigError
from caanet.models import ModelConfig, build_model
from caanet.modelfile import model_payload, save_model_file

SMALL = dict(channels=(4, 8, 8, 16), device_channels=(4, 8), input_shape=(32, 16), n_classes=3, n_devices=2)


def hand_count_nopool_avg(batch: int) -> int:
    """One training step of a cnn_nopool + avg network (SMALL widths, 32x16 maps): each 5x5 conv costs
    2*25*cin*cout*H*W FLOPs per clip forward and twice that backward (input and weight gradients), except the
    first conv's input gradient; the linear head 16 -> 3 costs 2*16*3 forward and twice that backward."""
    hw, k2 = 32 * 16, 25
    fwd = sum(2 * k2 * ci * co * hw for ci, co in [(1, 4), (4, 8), (8, 8), (8, 16)])
    bwd = 2 * fwd - 2 * k2 * 1 * 4 * hw
    head = 3 * 2 * 16 * 3
    return batch * (fwd + bwd + head)


def write_cell(root, dataset, cell, seed, cfg: ModelConfig, *, batch_size=2, iterations=5, train_seconds=1.5,
               evaluation=True, model=True, train_config=None):
    folder = root / "cells" / dataset / cell / f"seed{seed}"
    folder.mkdir(parents=True)
    if model:
        torch.manual_seed(0)
        payload = model_payload(
            model=build_model(cfg), model_config=cfg, spec=None,
            train_config=train_config if train_config is not None else {"batch_size": batch_size, "iterations": iterations},
            feature_params=TINY_PARAMS, norm_mean=[0.0] * 16, norm_std=[1.0] * 16,
            scene_labels=["a", "b", "c"], device_labels=["x", "y"])
        save_model_file(folder / "model.pt", payload)
    if evaluation:
        ev = {"iterations": iterations, "train_seconds": train_seconds} if evaluation is True else evaluation
        (folder / "evaluation.json").write_text(json.dumps(ev))
    return folder


def test_trained_cells_sum_step_flops_times_iterations(tmp_path):
    nopool = ModelConfig("cnn_nopool", "avg", **SMALL)
    multi = ModelConfig("cnn_pool", "att", device_source="predicted", cond_layer=2, **SMALL)
    write_cell(tmp_path, "d18", "cnn_nopool-avg-joint", 0, nopool, batch_size=2, iterations=5)
    write_cell(tmp_path, "d19", "cnn_pool-att-multi_task-L2", 1, multi, batch_size=4, iterations=3, train_seconds=2)
    write_cell(tmp_path, "d19", "cnn_pool-att-multi_task-L2", 2, multi, evaluation=False)  # unfinished: not counted
    cells = trained_cells(tmp_path)
    assert [(c.dataset, c.cell, c.seed) for c in cells] == [("d18", "cnn_nopool-avg-joint", 0),
                                                             ("d19", "cnn_pool-att-multi_task-L2", 1)]
    first, second = cells
    assert first.step_flops == hand_count_nopool_avg(2) and first.flops == 5 * hand_count_nopool_avg(2)
    assert (first.batch_size, first.iterations, first.train_seconds) == (2, 5, 1.5)
    assert first.model_config == nopool and second.model_config == multi
    assert second.flops == 3 * train_step_flops(multi, 4) and second.batch_size == 4
    assert run_training_flops(tmp_path) == 5 * hand_count_nopool_avg(2) + 3 * train_step_flops(multi, 4)
    assert run_training_flops(tmp_path / "empty") == 0


def test_trained_cells_errors_name_the_file_and_key(tmp_path):
    cfg = ModelConfig("cnn_pool", "max", **SMALL)
    write_cell(tmp_path / "a", "d", "cnn_pool-max-joint", 0, cfg, evaluation={"train_seconds": 1})
    with pytest.raises(ConfigError, match=r"seed0/evaluation.json: key 'iterations' is None"):
        trained_cells(tmp_path / "a")
    write_cell(tmp_path / "b", "d", "cnn_pool-max-joint", 0, cfg, model=False)
    with pytest.raises(ConfigError, match=r"seed0/model.pt: missing"):
        trained_cells(tmp_path / "b")
    write_cell(tmp_path / "c", "d", "cnn_pool-max-joint", 0, cfg, train_config={"iterations": 5})
    with pytest.raises(ConfigError, match=r"model.pt: key 'train_config.batch_size' is None"):
        trained_cells(tmp_path / "c")
    folder = write_cell(tmp_path / "e", "d", "cnn_pool-max-joint", 0, cfg)
    (folder / "evaluation.json").write_text("{")
    with pytest.raises(ConfigError, match=r"evaluation.json: not readable JSON"):
        trained_cells(tmp_path / "e")
    folder = write_cell(tmp_path / "f", "d", "cnn_pool-max-joint", 0, cfg, evaluation={"iterations": 2.5})
    with pytest.raises(ConfigError, match=r"'iterations' is 2.5"):
        trained_cells(tmp_path / "f")


def write_bench(root, key, seconds, end):
    path = root / "benchmarks" / "train_cell" / f"{key}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("s\th:m:s\tmax_rss\tcpu_time\n" + f"{seconds}\t0:00:01\t100\t{seconds}\n")
    os.utime(path, (end, end))
    return path


def test_training_window_runs_from_the_first_start_to_the_last_end(tmp_path):
    t0 = 1_700_000_000.0
    write_bench(tmp_path, "d/a-max-joint/seed0", 10.0, t0 + 30)  # 20 .. 30
    write_bench(tmp_path, "d/a-max-joint/seed1", 25.0, t0 + 40)  # 15 .. 40
    write_bench(tmp_path, "e/b-att-joint/seed0", 5.0, t0 + 100)  # 95 .. 100
    (tmp_path / "benchmarks" / "build_features.tsv").write_text("s\n999\n")  # another rule: not counted
    start, end, n = training_window(tmp_path)
    assert (start, end, n) == (t0 + 15, t0 + 100, 3)
    with pytest.raises(ConfigError, match="no train_cell benchmark files"):
        training_window(tmp_path / "none")
    bad = write_bench(tmp_path, "e/b-att-joint/seed1", 1.0, t0)
    bad.write_text("h:m:s\n0:00:01\n")
    with pytest.raises(ConfigError, match=r"seed1.tsv: no wall seconds in column 's'"):
        training_window(tmp_path)


def test_compute_share_by_hand():
    # 1 TFLOP in 10 s on 2 cores at 50 GFLOP/s each: the limit is 10 * 2 * 50e9 = 1e12 FLOPs
    assert compute_share(1e12, 10.0, 2, 50.0) == pytest.approx(1.0)
    assert compute_share(63.3e12, 17 * 60, 2, 93.0) == pytest.approx(63.3e12 / (1020 * 2 * 93e9))  # the run
    assert compute_share(0, 1.0, 1, 1.0) == 0
    for bad in [(-1, 1.0, 1, 1.0), (1, 0.0, 1, 1.0), (1, 1.0, 0, 1.0), (1, 1.0, 1, 0.0)]:
        with pytest.raises(ConfigError, match="compute_share"):
            compute_share(*bad)


def test_train_step_flops_of_teacher_forcing_with_an_unseen_device_policy():
    # Table IV's teacher-forcing cells replace an unseen device's one-hot ("uniform"): counted as the plain network
    plain = train_step_flops(ModelConfig("cnn_nopool", "avg", **SMALL), 2)
    for policy in ("zero", "uniform"):
        oracle = ModelConfig("cnn_nopool", "avg", device_source="oracle", cond_layer=2, unseen_device=policy, **SMALL)
        assert train_step_flops(oracle, 2) == plain == hand_count_nopool_avg(2)
    multi = ModelConfig("cnn_nopool", "avg", device_source="predicted", cond_layer=2, unseen_device="uniform", **SMALL)
    assert train_step_flops(multi, 2) > plain


def test_trained_cell_flops_property():
    cell = TrainedCell("d", "c", 0, None, 16, 300, 1.0, 1000)
    assert cell.flops == 300_000
