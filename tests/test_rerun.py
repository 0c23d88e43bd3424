"""caanet.rerun and caanet.data.manifest: what reruns a job (issue 9).

The workflow tests (tests/test_workflow.py) check the same through `snakemake -n` on a finished
tiny run; these check the functions the rules call, quickly.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from caanet import rerun
from caanet.data.manifest import dataset_manifest, refresh_manifest


def test_training_params_drop_only_what_changes_nothing():
    training = {"iterations": 6, "checkpoint_every": 3, "log_every": 2, "lr": 0.1, "channels": [2, 4]}
    assert rerun.training_params(training) == {"iterations": 6, "lr": 0.1, "channels": [2, 4]}
    assert training["checkpoint_every"] == 3  # not modified
    assert rerun.training_params(None) == {}


def test_training_uses_the_same_list_for_resuming():
    from caanet import training

    assert training._RESUME_INDIFFERENT is rerun.TRAINING_KEYS_CHANGING_NOTHING
    fields = {f.name for f in __import__("dataclasses").fields(training.TrainConfig)}
    assert set(rerun.TRAINING_KEYS_CHANGING_NOTHING) <= fields


def test_preset_params_drop_resources_cadence_paths_and_mirrors():
    preset = {
        "name": "p", "seeds": [0], "grid": {"layers": [1]},
        "training": {"iterations": 5, "checkpoint_every": 1, "log_every": 1},
        "resources": {"train": {"threads": 4, "gpu": 1}},
        "datasets": {"d": {"source": "local", "path": "/data/d", "devices": ["a"], "clip_seconds": 10.0},
                     "z": {"source": "zenodo", "remote": "k", "base_url": "https://mirror", "devices": ["a"]}},
    }
    out = rerun.preset_params(preset)
    assert out == {"name": "p", "seeds": [0], "grid": {"layers": [1]}, "training": {"iterations": 5},
                   "datasets": {"d": {"source": "local", "devices": ["a"], "clip_seconds": 10.0},
                                "z": {"source": "zenodo", "remote": "k", "devices": ["a"]}}}
    assert preset["resources"] and preset["datasets"]["d"]["path"] == "/data/d"  # not modified
    changed = json.loads(json.dumps(preset))
    changed["resources"]["train"]["threads"] = 1
    changed["training"]["checkpoint_every"] = 99
    changed["datasets"]["z"]["base_url"] = None
    assert rerun.preset_params(changed) == out
    changed["training"]["iterations"] = 6
    assert rerun.preset_params(changed) != out


def test_job_preset_is_the_full_resolved_preset():
    import yaml

    from caanet.config import SCHEMA_PATH

    config = yaml.safe_load((SCHEMA_PATH.parent.parent.parent / "config.yaml").read_text())
    config["preset"] = "tiny"
    p = rerun.job_preset(config)
    assert p["training"]["checkpoint_every"] == 3 and p["resources"]["train"]["threads"] == 1


# --- the manifest of a local dataset ---


def _dataset(root):
    (root / "audio").mkdir(parents=True)
    (root / "evaluation_setup").mkdir()
    (root / "meta.csv").write_text("filename\tscene_label\tidentifier\tsource_label\naudio/x.wav\tbus\tl-1\ta\n")
    (root / "evaluation_setup" / "fold1_train.txt").write_text("audio/x.wav\tbus\n")
    (root / "audio" / "x.wav").write_bytes(b"RIFF....")
    (root / "README.html").write_text("docs")
    return root


def test_manifest_lists_what_the_reader_uses(tmp_path):
    root = _dataset(tmp_path / "ds")
    (root / "audio" / ".DS_Store").write_bytes(b"\0")
    m = dataset_manifest(root)
    assert m["root"] == str(root.absolute())
    assert [f[0] for f in m["files"]] == ["audio/x.wav", "evaluation_setup/fold1_train.txt", "meta.csv"]
    st = (root / "meta.csv").stat()
    assert ["meta.csv", st.st_size, st.st_mtime_ns] in m["files"]


def test_manifest_is_rewritten_only_when_something_changed(tmp_path):
    root = _dataset(tmp_path / "ds")
    path = tmp_path / "results" / "manifests" / "ds.json"
    assert refresh_manifest(root, path)
    mtime = path.stat().st_mtime_ns
    assert not refresh_manifest(root, path)  # untouched: same file, same mtime
    (root / "README.html").write_text("other docs")  # not read by the index
    assert not refresh_manifest(root, path) and path.stat().st_mtime_ns == mtime
    wav = root / "audio" / "x.wav"
    wav.write_bytes(b"RIFF,,,,")  # same size, new content and mtime
    os.utime(wav, ns=(time.time_ns(), wav.stat().st_mtime_ns + 1_000_000))
    assert refresh_manifest(root, path)
    text = (root / "meta.csv").read_text().replace("bus", "tram")
    (root / "meta.csv").write_text(text)
    assert refresh_manifest(root, path)
    (root / "audio" / "y.wav").write_bytes(b"new")
    assert refresh_manifest(root, path)
    assert not refresh_manifest(root, path)


def test_manifest_of_a_missing_folder_names_it(tmp_path):
    from caanet.errors import DatasetError

    with pytest.raises(DatasetError, match="nope"):
        dataset_manifest(tmp_path / "nope")


def test_the_index_job_finds_the_dataset_from_its_manifest(tmp_path):
    from caanet.workflow_support import dataset_root_of

    root = _dataset(tmp_path / "ds")
    refresh_manifest(root, tmp_path / "m.json")
    assert dataset_root_of(tmp_path / "m.json") == root.absolute()
