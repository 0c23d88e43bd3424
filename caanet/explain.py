"""Where in time and frequency a model looked: the maps of ``caanet explain`` (the paper's Fig. 7 for any clip).

* Attention heads (``att``, ``roi_att``): the normalised attention ``A'`` of a class (Eq. 5-6,
  :func:`caanet.models.heads.attention_pooling`), which sums to 1 over the head's ``P x Q`` grid.
* ``max``/``avg`` heads: the class activation map (CAM, Zhou et al., CVPR 2016) of the linear head,
  ``CAM_k(p, q) = w_k . F[:, p, q] + b_k`` on the backbone's feature map ``F``; for global average
  pooling its mean over ``p, q`` is exactly the class's logit, for global max pooling it is the usual
  approximation (the logit is ``w_k . max_pq F`` per channel, not a function of one position).
* ``flatten``/``roi`` heads have one linear weight per position and class, mixed across positions:
  no map per position is defined, and :class:`ExplainError` says so.

The head's grid is coarser than the spectrogram where the backbone pools (``cnn_pool``: 16 frames x
16 mel bins per cell) or where ROI regions are taken (``roi_att``: ``roi_size`` cells per region):
:func:`to_input_grid` spreads each attention cell's value evenly over the spectrogram bins it
covers (so sums are kept) and gives a CAM cell's value to each of its bins; bins no cell covers
(the floor-mode remainder of ``cnn_pool``) get 0 and are blank in the figure. A recording of
several windows (:mod:`caanet.inference`) gets its windows' maps placed at their frames (to the
nearest frame) and averaged where windows overlap (:func:`place_windows`); an attention map of a
whole recording is then scaled to sum to 1 (each window's own ``A'`` sums to 1 already).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from caanet.errors import ConfigError
from caanet.features import logmel, logmel_batch, single_threaded_blas
from caanet.inference import ClipFeatures, ClipPrediction, Predictor, load_signal, signal_windows
from caanet.vocab import POOLING_REGISTRY, TOPOLOGY_REGISTRY

MAP_KINDS = {p.name: "attention" if p.attention else "cam" for p in POOLING_REGISTRY if p.attention or p.cam}
"""The map that explains each pooling head (derived from :data:`caanet.vocab.POOLING_REGISTRY`)."""


class ExplainError(ConfigError):
    """The model's head has no class map per time-frequency position (flatten, roi)."""


def map_kind(pooling: str) -> str:
    """``attention`` or ``cam`` for a pooling head; ExplainError for ``flatten``/``roi``."""
    if pooling in MAP_KINDS:
        return MAP_KINDS[pooling]
    raise ExplainError(
        f"a {pooling!r} head has no class map per time-frequency position: its linear layer weights every "
        "position of the flattened feature map separately and sums them, so neither an attention map (att, "
        "roi_att heads) nor a class activation map (max, avg heads) exists; explain a model with one of those heads")


def cell_size(config) -> tuple[int, int]:
    """Spectrogram bins ``(frames, mels)`` per cell of the head's map: 2**blocks where the backbone pools,
    times ``roi_size`` for ``roi_att``."""
    topo = TOPOLOGY_REGISTRY[config.topology]
    s = 2 ** len(topo.dilations) if topo.pool else 1
    if POOLING_REGISTRY[config.pooling].roi and POOLING_REGISTRY[config.pooling].attention:
        s *= config.roi_size
    return s, s


def to_input_grid(m: np.ndarray, cell: tuple[int, int], shape: tuple[int, int], *, spread: bool = True) -> np.ndarray:
    """Place a ``(P, Q)`` map on a ``shape`` ``(T, M)`` grid, ``cell`` bins per map cell.

    Cell ``(i, j)`` covers rows ``[i*ct, min((i+1)*ct, T))`` and columns likewise. ``spread`` (for a
    distribution such as A'): its value is divided by the number of bins it covers, so
    ``out.sum() == m.sum()`` when every cell covers one bin or more; otherwise (a score such as a
    CAM) each covered bin takes the cell's value.
    """
    m = np.asarray(m, dtype=np.float64)
    (ct, cm), (t, mm) = cell, shape
    out = np.zeros(shape, dtype=np.float64)
    for i in range(m.shape[0]):
        r0, r1 = i * ct, min((i + 1) * ct, t)
        if r0 >= r1:
            continue
        for j in range(m.shape[1]):
            c0, c1 = j * cm, min((j + 1) * cm, mm)
            if c0 >= c1:
                continue
            out[r0:r1, c0:c1] = m[i, j] / ((r1 - r0) * (c1 - c0)) if spread else m[i, j]
    return out


@torch.inference_mode()
def window_maps(predictor: Predictor, x: np.ndarray) -> tuple[np.ndarray, str]:
    """Class maps ``(W, K, P, Q)`` of standardised windows ``x`` ``(W, T, M)`` and their kind."""
    model, cfg = predictor.model, predictor.mf.config
    kind = map_kind(cfg.pooling)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if kind == "attention":
        return predictor.forward(x).attention.float().numpy(), kind
    x4 = model._check_input(xt)
    one_hot, _ = model.device_vector(x4, predictor._device_tensor(xt.shape[0]))
    cond = model.conditioning(one_hot) if one_hot is not None else None
    feats = model.backbone(x4, cond, cfg.cond_layer).float()
    fc = model.head.fc
    cam = torch.einsum("kc,bcpq->bkpq", fc.weight.float(), feats) + fc.bias.float()[None, :, None, None]
    return cam.numpy(), kind


@dataclass
class Explanation:
    """A recording's spectrogram and class maps.

    ``logmel`` ``(T, M)``: the whole recording's log-mel (not standardised); ``maps`` ``(C, T, M)``:
    the maps of ``classes`` on that grid; ``raw`` ``(C, W, P, Q)``: per window on the head's grid;
    ``kind``: ``attention`` or ``cam``; ``prediction``: the recording's :class:`ClipPrediction`.
    """

    path: str
    logmel: np.ndarray
    maps: np.ndarray
    raw: np.ndarray
    classes: list[str]
    kind: str
    prediction: ClipPrediction
    window_starts_s: list[float]
    params: object
    cell: tuple[int, int]
    scene_labels: list
    covered: np.ndarray  # (T, M) bool: bins under a cell of the head's map (the others are 0 in maps)


def choose_classes(prediction: ClipPrediction, labels, *, class_name: str | None, top_k: int) -> list[int]:
    """Indices of the classes to explain: ``class_name`` or the ``top_k`` most probable."""
    if class_name is not None:
        if class_name not in labels:
            raise ConfigError(f"--class {class_name!r} is not one of the model's scenes {list(labels)}")
        return [list(labels).index(class_name)]
    if not 1 <= top_k <= len(labels):
        raise ConfigError(f"--top-k {top_k}: must be 1..{len(labels)}")
    return [int(i) for i in np.argsort(-prediction.scene_logprob, kind="stable")[:top_k]]


def explain_clip(predictor: Predictor, path, *, class_name: str | None = None, top_k: int = 1) -> Explanation:
    """The :class:`Explanation` of one audio file (errors name the file, the option or the head)."""
    mf = predictor.mf
    params = mf.params
    map_kind(mf.config.pooling)  # refuse flatten/roi before reading audio
    y = load_signal(path, params.sample_rate)
    windows, starts = signal_windows(y, params.n_samples)
    full = y if y.shape[-1] >= params.n_samples else windows[0]
    with single_threaded_blas():
        feats = logmel_batch(windows, params)
        spec = logmel(full, params)
    clip = ClipFeatures(str(path), feats, starts, y.shape[-1] / params.sample_rate, params.sample_rate)
    prediction = predictor.predict([clip])[0]
    classes = choose_classes(prediction, mf.scene_labels, class_name=class_name, top_k=top_k)
    raw, kind = window_maps(predictor, predictor.normalise(feats))
    raw = raw[:, classes]  # (W, C, P, Q)
    cell = cell_size(mf.config)
    n_frames = feats.shape[1]
    grid_shape = (n_frames, params.n_mels)
    mask = covered(raw.shape[2:], cell, grid_shape)
    first = [s // params.hop_length for s in starts]
    attention = kind == "attention"
    maps = place_windows([[to_input_grid(raw[w, c], cell, grid_shape, spread=attention) for c in range(len(classes))]
                          for w in range(len(starts))], first, spec.shape[0], normalise=attention,
                         masks=[mask] * len(starts))
    covered_bins = place_windows([[mask.astype(float)]] * len(starts), first, spec.shape[0], normalise=False,
                                 masks=[mask] * len(starts))[0] > 0
    return Explanation(
        path=str(path), logmel=spec, maps=maps.astype(np.float32), raw=np.transpose(raw, (1, 0, 2, 3)).astype(np.float32),
        classes=[mf.scene_labels[i] for i in classes], kind=kind, prediction=prediction,
        window_starts_s=[s / params.sample_rate for s in starts], params=params, cell=cell,
        scene_labels=list(mf.scene_labels), covered=covered_bins)


def covered(n_cells: tuple[int, int], cell: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``shape`` mask of the bins under one of ``n_cells`` map cells of ``cell`` bins each."""
    mask = np.zeros(shape, dtype=bool)
    mask[: n_cells[0] * cell[0], : n_cells[1] * cell[1]] = True
    return mask


def place_windows(window_maps, first_frames, n_frames: int, *, normalise: bool, masks=None) -> np.ndarray:
    """Combine per-window maps ``[W][C] (T_w, M)`` into ``(C, n_frames, M)`` on the recording's frames.

    Window ``w`` starts at frame ``first_frames[w]``; where windows overlap (the last window of a long
    recording) their values are averaged over the windows whose map covers the bin (``masks[w]``,
    ``(T_w, M)`` bool, default all), so no region counts twice and a bin a window's pooling dropped
    does not dilute another window's value. ``normalise``: scale each class's map to sum to 1
    (attention: the share of the recording's attention per bin).
    """
    n_classes = len(window_maps[0])
    t_w, m = window_maps[0][0].shape
    total = np.zeros((n_classes, n_frames, m))
    cover = np.zeros((n_frames, m))
    for w, (maps, f0) in enumerate(zip(window_maps, first_frames)):
        f1 = min(f0 + t_w, n_frames)
        mask = np.ones((t_w, m), dtype=bool) if masks is None else masks[w]
        for c in range(n_classes):
            total[c, f0:f1] += np.where(mask, maps[c], 0.0)[: f1 - f0]
        cover[f0:f1] += mask[: f1 - f0]
    out = np.divide(total, cover, out=np.zeros_like(total), where=cover > 0)
    if normalise:
        sums = out.sum(axis=(1, 2), keepdims=True)
        out = np.divide(out, sums, out=np.zeros_like(out), where=sums > 0)
    return out


def mel_axis(params) -> tuple[np.ndarray, float]:
    """Centre of each mel band on the mel scale (Slaney, as the filters) and the band spacing (mel)."""
    import librosa

    edges = librosa.mel_frequencies(params.n_mels + 2, fmin=params.fmin, fmax=params.fmax, htk=False)
    mels = librosa.hz_to_mel(edges, htk=False)
    return mels[1:-1], float(mels[1] - mels[0])


def frame_times(params, n_frames: int) -> tuple[float, float]:
    """Left and right edges in seconds of ``n_frames`` frames (frame ``f`` centred at ``(f*hop + n_fft/2)/sr``)."""
    sr, hop = params.sample_rate, params.hop_length
    left = (params.n_fft / 2 - hop / 2) / sr
    return max(left, 0.0), left + n_frames * hop / sr


def hz_ticks(fmin: float, fmax: float) -> list[float]:
    """Round frequencies (Hz) within ``[fmin, fmax]`` for the mel axis."""
    import librosa

    cands = [f for f in (100, 200, 500, 1000, 2000, 5000, 10000, 20000) if fmin <= f <= fmax]
    lo, hi = librosa.hz_to_mel(fmin), librosa.hz_to_mel(fmax)
    ticks: list[float] = []
    for f in cands:  # keep ticks at least 6% of the axis apart
        if not ticks or librosa.hz_to_mel(f) - librosa.hz_to_mel(ticks[-1]) >= 0.06 * (hi - lo):
            ticks.append(float(f))
    return ticks or [float(math.floor(fmin)), float(math.floor(fmax))]
