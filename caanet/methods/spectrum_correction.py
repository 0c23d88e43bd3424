"""Spectrum correction (M. Kośmider, DCASE 2019 Task 1B winner; Interspeech 2020,
doi 10.21437/Interspeech.2020-3088), written from the paper.

Per device ``d``, a per-frequency gain maps its mean STFT magnitude onto the reference device's ``r``.
It is fitted on the parallel recordings of the TRAINING split only (:mod:`caanet.methods.device_response`):
for each segment ``k`` both devices recorded, the ratio of their mean magnitudes over time, averaged
over the pairs,

    g_d(f) = 1/K sum_k  S_{r,k}(f) / S_{d,k}(f),        S(f) = mean_t |X(t, f)|,

and ``g_r = 1``. Every clip's STFT magnitude is multiplied by its device's gain before the mel
filterbank (:func:`caanet.features.logmel`'s ``gain``), in training and in test: a corrected feature
cache (:func:`build_features`). Choices where the paper leaves room, stated in the report:

* a seen device without any parallel training pair gets the paper's unaligned variant, the ratio of
  the two devices' mean spectra over all their training clips;
* a device without training clips (unseen, DCASE 2020's s4-s6) gets the mean correction of the seen
  non-reference devices, the geometric mean of their gains (the mean in dB), since no fit is possible;
* a test clip is corrected with its own device's gain, chosen by its TRUE device label: oracle
  information at test time, as teacher forcing (``evaluation.json``'s ``test_device_labels_used``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from caanet.errors import CacheError, DatasetError
from caanet.io import atomic_path
from caanet.methods.device_response import floored, mean_pair_ratio, mean_spectra, pair_spectra

FITTED, UNALIGNED, UNSEEN_MEAN, REFERENCE = "fitted", "unaligned", "unseen_mean", "reference"
"""How a device's gain was obtained (the fit file's ``source``)."""
SOURCE_TEXT = {
    FITTED: "fitted on {n} parallel training pairs",
    UNALIGNED: "unaligned: ratio of mean spectra of {n} training clips (no parallel pair)",
    UNSEEN_MEAN: "no training clip: the mean correction of the seen non-reference devices ({of})",
    REFERENCE: "the reference device (gain 1)",
}


def unseen_mean(gains: Sequence[np.ndarray]) -> np.ndarray:
    """The mean correction of several devices' gains ``(F,)``: their geometric mean (mean in dB), or
    ones when there are none."""
    gains = [np.asarray(g, float) for g in gains]
    if not gains:
        raise ValueError("unseen_mean: no gains to average")
    return np.exp(np.mean([np.log(floored(g)) for g in gains], axis=0))


def fit_gains(train: pd.DataFrame, pairs: dict, spectra: np.ndarray, *, reference_device: str,
              devices: Sequence[str], read_spectra: Callable[[Sequence[str]], np.ndarray]) -> dict:
    """The gains of every device of ``devices`` from the parallel pairs (module docstring).

    ``train``/``pairs``/``spectra``: :func:`caanet.methods.device_response.pair_spectra`'s; ``read_spectra``
    reads more clips' mean spectra (the unaligned variant). Returns ``{"devices", "gains" (D, F),
    "source" (D,), "n" (D,): pairs or clips behind each gain, "of": the devices averaged for unseen ones}``."""
    seen = set(train["device"])
    if reference_device not in devices:
        raise DatasetError(f"spectrum correction: reference device {reference_device!r} is not one of {list(devices)}")
    gains, source, n = {}, {}, {}
    for d in devices:
        if d == reference_device:
            gains[d], source[d], n[d] = np.ones(spectra.shape[1]), REFERENCE, 0
        elif d in seen and d in pairs and len(pairs[d]):
            p = pairs[d]
            gains[d] = mean_pair_ratio(spectra[p["reference"].to_numpy()], spectra[p["device"].to_numpy()])
            source[d], n[d] = FITTED, len(p)
        elif d in seen:
            ref_paths = train.loc[train["device"] == reference_device, "audio_path"].tolist()
            dev_paths = train.loc[train["device"] == d, "audio_path"].tolist()
            gains[d] = floored(read_spectra(ref_paths).mean(axis=0)) / floored(read_spectra(dev_paths).mean(axis=0))
            source[d], n[d] = UNALIGNED, len(dev_paths)
    others = [d for d in devices if d in gains and d != reference_device]
    for d in devices:
        if d not in gains:
            gains[d] = unseen_mean([gains[o] for o in others]) if others else np.ones(spectra.shape[1])
            source[d], n[d] = UNSEEN_MEAN, 0
    return {"devices": list(devices), "gains": np.stack([gains[d] for d in devices]),
            "source": [source[d] for d in devices], "n": [int(n[d]) for d in devices], "of": others}


def fit(audio_index: pd.DataFrame, params, settings, *, reference_device: str, devices: Sequence[str],
        out_path, n_jobs: int = 1, log: Callable[[str], None] = print) -> dict:
    """Fit the gains from the TRAINING split of ``audio_index`` (the workflow's 44.1 kHz index) and
    write them to ``out_path`` (``.npz``: ``devices``, ``gains`` float64 (D, n_fft//2+1), ``source``,
    ``n``, ``of``, ``reference_device``, ``frequencies`` in Hz), atomically. ``settings``: none.
    Returns the fit (:func:`fit_gains`)."""
    train, pairs, spectra = pair_spectra(audio_index, params, reference_device, n_jobs=n_jobs, log=log)
    result = fit_gains(train, pairs, spectra, reference_device=reference_device, devices=devices,
                       read_spectra=lambda paths: mean_spectra(paths, params, n_jobs=n_jobs))
    freqs = np.fft.rfftfreq(params.n_fft, 1.0 / params.sample_rate)
    with atomic_path(out_path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, devices=np.array(result["devices"]), gains=result["gains"],
                     source=np.array(result["source"]), n=np.array(result["n"]), of=np.array(result["of"], dtype=str),
                     reference_device=np.array(reference_device), frequencies=freqs)
    for d, s, k, g in zip(result["devices"], result["source"], result["n"], result["gains"]):
        db = 20 * np.log10(floored(g))
        log(f"spectrum correction: device {d}: {describe_source(s, k, result['of'])}; gain "
            f"{db.min():+.1f} .. {db.max():+.1f} dB")
    return result


def describe_source(source: str, n: int, of: Sequence[str]) -> str:
    """A device's gain source in words (:data:`SOURCE_TEXT`)."""
    return SOURCE_TEXT[source].format(n=n, of=", ".join(of) or "none: gain 1")


def read_gains(path) -> dict:
    """The fit written by :func:`fit`: ``{"devices", "gains", "source", "n", "of", "reference_device"}``;
    CacheError naming the file when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {"devices": [str(d) for d in z["devices"]], "gains": np.asarray(z["gains"], float),
                   "source": [str(s) for s in z["source"]], "n": [int(k) for k in z["n"]],
                   "of": [str(d) for d in z["of"]], "reference_device": str(z["reference_device"])}
    except (OSError, KeyError, ValueError) as exc:
        raise CacheError(f"{path}: not a spectrum-correction fit ({exc})") from None
    if out["gains"].shape[0] != len(out["devices"]):
        raise CacheError(f"{path}: {out['gains'].shape[0]} gains for {len(out['devices'])} devices")
    return out


def build_features(audio_index: pd.DataFrame, params, settings, fit_path, out_path, *, dataset: str,
                   scene_labels: Sequence[str], device_labels: Sequence[str], reference_device: str,
                   n_jobs: int = 1, log: Callable[[str], None] = print) -> dict:
    """The corrected feature cache: :func:`caanet.features.build_cache` of every clip (both splits) with
    its device's gain on the STFT magnitude; attributes ``derived_method`` (``spectrum_correction``) and
    ``method_details`` (JSON: each device's gain source in words). Every device of the index needs a
    gain in the fit (CacheError otherwise)."""
    from caanet.features import build_cache

    fitted = read_gains(fit_path)
    gains = dict(zip(fitted["devices"], fitted["gains"]))
    missing = sorted(set(audio_index["device"].astype(str)) - set(gains))
    if missing:
        raise CacheError(f"{fit_path}: no gain for device(s) {missing} of {dataset}")
    details = {d: describe_source(s, k, fitted["of"]) for d, s, k in zip(fitted["devices"], fitted["source"], fitted["n"])}
    return build_cache(audio_index, Path(out_path), params, dataset=dataset, scene_labels=scene_labels,
                       device_labels=device_labels, n_jobs=n_jobs, log=log, gains=gains,
                       extra_attrs={"derived_method": "spectrum_correction",
                                    "method_details": json.dumps({"gains": details,
                                                                  "reference_device": fitted["reference_device"]})})
