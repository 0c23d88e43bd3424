"""Shared test fixtures.

``make_tiny_cache(path, **kw)`` writes a tiny feature cache in the contract's HDF5 layout
(docs/design.md, "Features") with learnable structure: each scene raises its own band of mel bins,
each device adds its own spectral tilt. Recording locations (``identifier``) belong to one scene and
one split; device ``a`` records every segment, ``b`` and ``c`` record segment 0 of each location in
parallel (same filename stem, device suffix), as in the DCASE data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

TINY_SCENES = ["bus", "park", "street_traffic"]
TINY_DEVICES = ["a", "b", "c"]
# 32 frames x 16 mels: 1 + (16000 - 512) // 496 = 32
TINY_PARAMS = {"sample_rate": 16000, "n_fft": 512, "hop_length": 496, "window": "hamming", "n_mels": 16,
               "fmin": 20.0, "fmax": 8000.0, "log_offset": 1e-8, "clip_seconds": 1.0}


def _params_hash(params: dict) -> str:
    """FeatureParams.hash(): sha256 of the canonical JSON of the fields, first 10 hex digits."""
    return hashlib.sha256(json.dumps(params, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:10]


def write_tiny_cache(path, *, seed: int = 0, train_locations: int = 4, test_locations: int = 2,
                     segments: int = 3, scenes=TINY_SCENES, devices=TINY_DEVICES, nan_clip: str | None = None,
                     unseen_devices=()) -> Path:
    """Write the tiny cache to ``path`` and return it.

    Per scene: ``train_locations`` + ``test_locations`` locations; per location ``segments`` clips on
    the first device and one parallel clip (segment 0) on each other device. ``nan_clip``: the
    filename whose features are set to NaN (to test non-finite losses). ``unseen_devices``: devices
    that record only test locations (absent from training, like s4-s6 of DCASE 2020).
    """
    import h5py

    rng = np.random.default_rng(seed)
    n_frames, n_mels = 32, TINY_PARAMS["n_mels"]
    rows = []
    for s, scene in enumerate(scenes):
        for loc in range(train_locations + test_locations):
            split = "train" if loc < train_locations else "test"
            ident = f"city-{s * 100 + loc}"
            for seg in range(segments):
                for d, dev in enumerate(devices):
                    if d > 0 and seg > 0 or (dev in unseen_devices and split == "train"):
                        continue
                    rows.append((f"audio/{scene}-{ident}-{seg}-{dev}.wav", scene, dev, ident, split, s, d))
    x = rng.normal(0.0, 1.0, size=(len(rows), n_frames, n_mels)).astype(np.float32)
    band = n_mels // len(scenes)
    tilt = np.linspace(-1.0, 1.0, n_mels, dtype=np.float32)
    for i, (fname, _, _, _, _, s, d) in enumerate(rows):
        x[i, :, s * band:(s + 1) * band] += 2.0
        x[i] += 1.5 * (d - 1) * tilt
        if fname == nan_clip:
            x[i] = np.nan
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    str_dt = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        f.create_dataset("logmel", data=x, chunks=(min(16, len(rows)), n_frames, n_mels))
        for j, key in enumerate(("filename", "scene", "device", "identifier", "split")):
            f.create_dataset(key, data=np.array([r[j] for r in rows], dtype=object), dtype=str_dt)
        f.attrs["params"] = json.dumps(TINY_PARAMS)
        f.attrs["params_hash"] = _params_hash(TINY_PARAMS)
        f.attrs["dataset"] = "tiny"
        f.attrs["scene_labels"] = json.dumps(list(scenes))
        f.attrs["device_labels"] = json.dumps(list(devices))
        f.attrs["n_padded"] = 0
        f.attrs["n_cropped"] = 0
        f.attrs["caanet_version"] = "test"
    return path


@pytest.fixture
def make_tiny_cache():
    """The :func:`write_tiny_cache` function (call it with a path under tmp_path)."""
    return write_tiny_cache


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """A tiny feature cache shared by the session (read-only: do not modify it)."""
    return write_tiny_cache(tmp_path_factory.mktemp("tiny_cache") / "tiny-cache.h5")


@pytest.fixture
def one_torch_thread():
    """Tiny models gain nothing from threads; one keeps the tests quick on a shared machine
    (modules that train use it for every test: ``pytestmark = pytest.mark.usefixtures(...)``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
