"""DCASE's complexity counts (caanet.complexity, caanet.complexity_table): torchinfo's parameters and multiply-accumulates against
hand-computed values, the parameter memory and the challenge's limits, and the per-model table."""

import json

import pytest
import torch

from caanet.complexity import (
    COMPLEXITY_KEYS,
    DCASE_MAX_MACS_PER_SECOND,
    DCASE_MAX_PARAM_BYTES,
    complexity_record,
    measure_model,
)
from caanet.complexity_table import TABLE_COLUMNS, complexity_table
from caanet.errors import ResultsError
from caanet.models import ModelConfig, build_model
from caanet.spec import CellSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WIDTHS = dict(channels=(4, 8, 8, 16), device_channels=(4, 8), input_shape=(31, 64))


def test_pooled_cnn_with_attention_counts_by_hand():
    # 5x5 convs without bias (BatchNorm follows), 2x2 pooling after each block: the convs see 31x64,
    # 15x32, 7x16 and 3x8 positions, the attention's two 1x1 convs (16 -> 10, with bias) 1x4
    convs = [(1 * 25 * 4, 31 * 64), (4 * 25 * 8, 15 * 32), (8 * 25 * 8, 7 * 16), (8 * 25 * 16, 3 * 8)]
    bn = 2 * (4 + 8 + 8 + 16)            # torchinfo: batch x parameters for BatchNorm
    head = 2 * (16 * 10 + 10)
    params = sum(w for w, _ in convs) + bn + head
    macs = sum(w * pos for w, pos in convs) + bn + head * 1 * 4
    assert (params, macs) == (6112, 839832)
    model = build_model(ModelConfig(topology="cnn_pool", pooling="att", **WIDTHS))
    c = measure_model(model, clip_seconds=1.0)
    assert (c["params"], c["macs_per_clip"]) == (params, macs)
    assert (c["bytes_fp32"], c["bytes_fp16"], c["bytes_int8"]) == (4 * params, 2 * params, params)
    assert c["macs_per_second"] == macs and c["device_cnn"] is False and c["batchnorm_folded"] is False
    assert (c["input_frames"], c["input_mels"]) == (31, 64)
    assert list(c) == list(COMPLEXITY_KEYS)


def test_multi_task_counts_cnn_d_and_the_conditioning():
    joint = measure_model(build_model(ModelConfig(topology="atrous", pooling="att", **WIDTHS)), 1.0)
    multi = build_model(ModelConfig(topology="atrous", pooling="att", device_source="predicted", cond_layer=3,
                                    n_devices=3, **WIDTHS))
    c = measure_model(multi, 1.0)
    # CNN-d: conv 1->4 on 31x64, conv 4->8 on 15x32, BatchNorms, linear 8->3; Eq. 1's conditioning: 3 -> 8 (+bias)
    cnn_d_params = 100 + 8 + 800 + 16 + 27
    cnn_d_macs = 100 * 31 * 64 + 8 + 800 * 15 * 32 + 16 + 27
    cond = 3 * 8 + 8
    assert c["device_cnn"] is True
    assert c["params"] == joint["params"] + cnn_d_params + cond
    assert c["macs_per_clip"] == joint["macs_per_clip"] + cnn_d_macs + cond
    assert c["params"] == sum(p.numel() for p in multi.parameters())


def test_teacher_forcing_takes_a_device_and_the_model_is_left_as_it_was():
    model = build_model(ModelConfig(topology="atrous", pooling="avg", device_source="oracle", cond_layer=2,
                                    **WIDTHS)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    c = measure_model(model, clip_seconds=2.0)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert c["macs_per_second"] == pytest.approx(c["macs_per_clip"] / 2.0) and c["clip_seconds"] == 2.0


def test_record_against_dcase_limits():
    at = complexity_record(DCASE_MAX_PARAM_BYTES, DCASE_MAX_MACS_PER_SECOND * 10, 10.0)
    assert at["fits_dcase_params_int8"] and at["fits_dcase_macs"]
    over = complexity_record(DCASE_MAX_PARAM_BYTES + 1, DCASE_MAX_MACS_PER_SECOND + 1, 1.0)
    assert not over["fits_dcase_params_int8"] and not over["fits_dcase_macs"]
    assert (DCASE_MAX_PARAM_BYTES, DCASE_MAX_MACS_PER_SECOND) == (128_000, 30_000_000)   # NeSsi's limits
    with pytest.raises(ValueError, match="clip_seconds"):
        complexity_record(1, 1, 0.0)
    with pytest.raises(ValueError, match="counts"):
        complexity_record(-1, 1, 1.0)


def _write(path, spec: CellSpec, complexity: dict | None):
    path.parent.mkdir(parents=True, exist_ok=True)
    ev = {"cell_id": spec.cell_id, "spec": spec.to_dict(), "per_device": {}}
    if complexity is not None:
        ev["complexity"] = complexity
    path.write_text(json.dumps(ev))
    return path


def test_complexity_table_one_row_per_distinct_model(tmp_path):
    small = complexity_record(6112, 839832, 1.0, input_shape=(31, 64))
    big = complexity_record(7095, 12565915, 1.0, input_shape=(31, 64), device_cnn=True)
    files = [
        _write(tmp_path / "1.json", CellSpec.from_id("cnn_pool-att-joint", dataset="d", seed=0), small),
        _write(tmp_path / "2.json", CellSpec.from_id("cnn_pool-att-joint", dataset="d", seed=1), small),
        _write(tmp_path / "3.json", CellSpec.from_id("cnn_pool-att-single_device-a", dataset="d"), small),
        _write(tmp_path / "4.json", CellSpec.from_id("cnn_pool-att-single_device-b", dataset="d"), small),
        _write(tmp_path / "5.json", CellSpec.from_id("atrous-att-multi_task-L3", dataset="d"), big),
    ]
    t = complexity_table(files)
    assert list(t.columns) == TABLE_COLUMNS and len(t) == 3
    joint = t[t["strategy"] == "joint"].iloc[0]
    assert joint["n_cells"] == 2 and joint["cell_ids"] == "cnn_pool-att-joint" and joint["params"] == 6112
    sd = t[t["strategy"] == "single_device"].iloc[0]
    assert sd["cell_ids"] == "cnn_pool-att-single_device-a;cnn_pool-att-single_device-b" and sd["n_cells"] == 2
    mt = t[t["strategy"] == "multi_task"].iloc[0]
    assert mt["cond_layer"] == 3 and bool(mt["device_cnn"]) and mt["macs_per_second"] == 12565915
    assert set(t["method"]) == {"none"}


def test_complexity_table_refuses_missing_or_inconsistent_counts(tmp_path):
    spec = CellSpec.from_id("atrous-att-joint", dataset="d", seed=0)
    old = _write(tmp_path / "old" / "evaluation.json", spec, None)
    with pytest.raises(ResultsError, match=r"old/evaluation\.json: key 'complexity' is missing"):
        complexity_table([old])
    a = _write(tmp_path / "a.json", spec, complexity_record(10, 100, 1.0))
    b = _write(tmp_path / "b.json", CellSpec.from_id("atrous-att-joint", dataset="d", seed=1),
               complexity_record(11, 100, 1.0))
    with pytest.raises(ResultsError, match=r"b\.json: complexity \[.*params.\] differs .*a\.json"):
        complexity_table([a, b])


def test_a_trained_cell_records_its_complexity_in_evaluation_model_file_and_inspect(tiny_cache, tmp_path):
    from caanet.cli import inspect_path
    from caanet.modelfile import load_model_file
    from caanet.training import TrainConfig, train_cell

    cfg = TrainConfig(iterations=2, batch_size=8, channels=(4, 8, 8, 16), device_channels=(4, 8), log_every=1,
                      checkpoint_every=2, lambda_check_every=1, val_fraction=0.2, eval_batch_size=16)
    ev = train_cell(tiny_cache, CellSpec.from_id("cnn_pool-att-multi_task-L2", dataset="tiny"), cfg, tmp_path)
    mf = load_model_file(tmp_path / "model.pt")
    assert ev["complexity"] == measure_model(mf.model, mf.clip_seconds)
    assert mf.training["complexity"] == ev["complexity"]           # the model file's summary carries it
    info = inspect_path(str(tmp_path))
    assert info["complexity"] == ev["complexity"] and "complexity" not in info["training"]
    assert info["complexity"]["params"] == info["n_parameters"] and info["complexity"]["device_cnn"] is True


def test_counting_is_training_code_and_the_table_is_not():
    """Changing how a training job counts reruns the training (its evaluation.json holds the counts);
    changing the table or the widths comparison reruns only the aggregation (caanet.provenance)."""
    from caanet.provenance import PACKAGE_ROOT, import_closure

    from caanet.training import ENTRY_MODULES

    def closure(*modules):
        return {str(p.relative_to(PACKAGE_ROOT)) for p in import_closure(*modules)}

    training, stats = closure(*ENTRY_MODULES), closure("caanet.complexity_table")
    assert "complexity.py" in training and "complexity_table.py" not in training
    assert "complexity.py" in stats
