"""Issue 9: every text file caanet reads accepts a UTF-8 byte-order mark (spreadsheet tools write one).

Each reader is given a file with a BOM and must read exactly what it reads without one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from caanet.data import layout
from caanet.data.layout import SCENE_LABELS, read_dataset, read_index, write_index
from test_layout import write_dataset

BOM = "\ufeff".encode("utf-8")


def add_bom(path: Path) -> None:
    data = path.read_bytes()
    assert not data.startswith(BOM)
    path.write_bytes(BOM + data)


def test_text_encoding_is_one_constant():
    from caanet.io import TEXT_ENCODING

    assert (BOM + "a\tb".encode()).decode(TEXT_ENCODING) == "a\tb"


@pytest.mark.parametrize("style", ["dcase2018", "dcase2019"])
@pytest.mark.parametrize("which", ["meta.csv", "train", "evaluate", "test", "all"])
def test_dataset_files_with_a_bom_read_as_without(tmp_path, style, which):
    plain = read_dataset(write_dataset(tmp_path / "plain", style), scene_labels=SCENE_LABELS,
                         device_labels=["a", "b", "c"])
    root = write_dataset(tmp_path / "bom", style)
    fmt = layout.LAYOUTS[style]
    files = {"meta.csv": [root / "meta.csv"], **{w: [fmt.path(root, w)] for w in ("train", "evaluate", "test")}}
    files["all"] = [p for key in ("meta.csv", "train", "evaluate", "test") for p in files[key]]
    for path in files[which]:
        add_bom(path)
    df = read_dataset(root, scene_labels=SCENE_LABELS, device_labels=["a", "b", "c"])
    assert df.drop(columns="path").equals(plain.drop(columns="path"))


def test_index_with_a_bom(tmp_path):
    df = read_dataset(write_dataset(tmp_path / "ds", "dcase2019"), scene_labels=SCENE_LABELS)
    write_index(df, tmp_path / "index.csv")
    add_bom(tmp_path / "index.csv")
    assert list(read_index(tmp_path / "index.csv")["filename"]) == list(df["filename"])


def test_layers_csv_with_a_bom(tmp_path):
    from caanet.aggregate import read_layers

    path = tmp_path / "layers.csv"
    path.write_text("topology,pooling,cond_layer\natrous,att,3\ncnn_pool,max,1\n", encoding="utf-8")
    add_bom(path)
    assert read_layers(path) == {("atrous", "att"): 3, ("cnn_pool", "max"): 1}


def test_remote_catalogue_with_a_bom(tmp_path):
    from caanet.data.download import REMOTE_TABLE, remote_files

    path = tmp_path / "remote.csv"
    path.write_bytes(REMOTE_TABLE.read_bytes())
    add_bom(path)
    assert remote_files("dcase2018_task1b_dev", table=path) == remote_files("dcase2018_task1b_dev")


def test_json_files_with_a_bom(tmp_path):
    from caanet.render.figures import load_evaluation
    from caanet.workflow_support import dataset_root_of

    root = write_dataset(tmp_path / "ds", "dcase2018")
    (tmp_path / "dataset.json").write_text(json.dumps({"root": str(root)}), encoding="utf-8")
    add_bom(tmp_path / "dataset.json")
    assert dataset_root_of(tmp_path / "dataset.json") == root
    ev = {"scene_labels": ["bus"], "per_device": {}}
    (tmp_path / "evaluation.json").write_text(json.dumps(ev), encoding="utf-8")
    add_bom(tmp_path / "evaluation.json")
    assert load_evaluation(tmp_path / "evaluation.json")[0] == ev


def test_config_yaml_with_a_bom(tmp_path):
    from caanet.config import read_yaml

    path = tmp_path / "schema.yaml"
    path.write_text("type: object\n", encoding="utf-8")
    add_bom(path)
    assert read_yaml(path) == {"type": "object"}


def test_results_csvs_with_a_bom(tmp_path):
    """predictions.csv and metrics.csv go through pandas, which drops a BOM itself."""
    from caanet.stats import load_predictions

    path = tmp_path / "predictions.csv"
    cols = ["filename", "identifier", "device", "scene", "pred_scene", "correct", "pred_device"]
    pd.DataFrame([["audio/x.wav", "i", "a", "bus", "bus", True, "a"]], columns=cols).to_csv(path, index=False)
    add_bom(path)
    assert list(load_predictions(path).columns[:len(cols)]) == cols
