"""Tests whose variance is the variance of the paper's Avg, and Holm's correction over a family of tests.

The paper's **Avg** is the mean over the ``D`` devices of each device's class-wise accuracy (the mean
over the scenes ``s`` present on device ``d`` of the per-scene accuracy)::

    Avg = sum_{d,s} w_{d,s} acc_{d,s},      w_{d,s} = 1 / (D S_d),      acc_{d,s} = mean of correct_i, i in (d, s)

so it weights every device equally whatever its number of test clips. The paper's z-test
(:func:`caanet.stats.ztest_from_percent`) gives it the binomial variance of a proportion of all
``n`` test clips; on DCASE 2018 fold 1 (A 2,518, B 180, C 180 test clips) the Avg's actual
precision is that of about 782 clips (:func:`effective_n`), because B and C, a third of its weight
each, have 180 clips each.

**Paired, stratified by device and scene** (:func:`paired_stratified_test`, for two models that
classified the same clips): with ``delta_i = correct_a,i - correct_b,i`` the difference of the two
Avgs is ``Delta = sum w_{d,s} mean(delta_i, i in (d, s))``, and the strata are independent samples,
so (stratified sampling; Cochran, *Sampling Techniques*, 3rd ed., 1977, Sec. 5.3)::

    Var(Delta) = sum_{d,s} w_{d,s}^2 s_{d,s}^2 / n_{d,s},      z = Delta / sqrt(Var),

``s_{d,s}^2`` the sample variance (``ddof=1``) of ``delta`` in the stratum. A stratum of one clip
has no variance of its own: it takes its device's pooled variance of ``delta`` (``ddof=1``), or 1 (the
largest variance of a difference in ``[-1, 1]``) when the device has a single clip. ``correct`` may be a
mean over seeds (a fraction per clip): the test is then on the seed-mean Avg, with the variance of the
test sample (the clips) and the seeds held fixed.

**Unpaired, stratified by device** (:func:`device_stratified_ztest`, from per-device accuracies and
clip counts alone, so it applies to the paper's published numbers): the two-proportion z-test of each
device, pooled per device under H0, combined with the Avg's weights::

    Var(Delta) = (1/D^2) sum_d pbar_d (1 - pbar_d) (1/n_a,d + 1/n_b,d),
    pbar_d = (n_a,d p_a,d + n_b,d p_b,d) / (n_a,d + n_b,d),      z = Delta / sqrt(Var).

With one device it is the paper's test; with equal accuracies on every device it is the paper's test
with ``n`` replaced by :func:`effective_n` ``= D^2 / sum_d 1/n_d``. A device's class-wise accuracy is
treated as a proportion of its clips (balanced scenes: the per-scene strata would make it slightly
smaller, so the variance errs on the large side).

**Holm's step-down correction** (:func:`holm`; Holm, *Scand. J. Statist.* 6, 1979): with the ``m``
p-values of a family sorted ``p_(1) <= ... <= p_(m)``, the adjusted ``p~_(k) = max_{j<=k} min(1,
(m - j + 1) p_(j))``; rejecting ``p~ < alpha`` controls the family-wise error rate at ``alpha``.
"""

from __future__ import annotations

import math
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy import stats as _sps

from caanet.errors import ConfigError, ResultsError

ALTERNATIVES = ("greater", "less", "two-sided")


class StratifiedResult(NamedTuple):
    """``diff`` = Avg_a - Avg_b and ``se`` its standard error (percentage points), ``z``, ``p``, the
    clips ``n`` and the Avg's effective number of clips ``n_eff`` (:func:`effective_n`)."""

    diff: float
    se: float
    z: float
    p: float
    n: int
    n_eff: float


def p_from_z(z: float, alternative: str) -> float:
    """The normal p-value of ``z``: one-sided ``greater`` (H1: a > b), ``less``, or ``two-sided``."""
    if alternative not in ALTERNATIVES:
        raise ConfigError(f"alternative={alternative!r} is not one of {list(ALTERNATIVES)}")
    if math.isnan(z):
        return math.nan
    if alternative == "greater":
        return float(_sps.norm.sf(z))
    if alternative == "less":
        return float(_sps.norm.cdf(z))
    return float(min(1.0, 2.0 * _sps.norm.sf(abs(z))))


def _z(diff: float, var: float) -> float:
    if var > 0:
        return diff / math.sqrt(var)
    return 0.0 if diff == 0 else math.copysign(math.inf, diff)


def effective_n(n_by_device: Mapping[str, int] | Sequence[int]) -> float:
    """The number of clips whose binomial variance equals the Avg's: ``D^2 / sum_d 1/n_d``
    (DCASE 2018 fold 1, 2,518 + 180 + 180 clips: 782.0). Raises ConfigError for a device without clips."""
    counts = list(n_by_device.values()) if isinstance(n_by_device, Mapping) else list(n_by_device)
    if not counts or any(int(c) <= 0 for c in counts):
        raise ConfigError(f"effective_n: every device needs test clips, got {counts}")
    return len(counts) ** 2 / sum(1.0 / int(c) for c in counts)


def avg_weights(device: Sequence[str], scene: Sequence[str]) -> pd.DataFrame:
    """The Avg's strata: one row per (device, scene) present with ``n`` clips and weight
    ``w = 1 / (D S_d)`` (``D`` devices, ``S_d`` scenes present on device ``d``); the weights sum to 1."""
    df = pd.DataFrame({"device": np.asarray(device).astype(str), "scene": np.asarray(scene).astype(str)})
    if df.empty:
        raise ResultsError("the Avg's strata: no clips")
    strata = df.groupby(["device", "scene"], sort=True).size().rename("n").reset_index()
    n_devices = strata["device"].nunique()
    scenes = strata.groupby("device")["scene"].transform("size")
    strata["w"] = 1.0 / (n_devices * scenes)
    return strata


def stratified_avg(device: Sequence[str], scene: Sequence[str], correct: Sequence[float]) -> float:
    """The Avg (percent) of per-clip correctness ``correct`` (0/1, or a mean over seeds): the mean over
    devices of the mean over scenes of the per-stratum mean (:func:`avg_weights`)."""
    df = pd.DataFrame({"device": np.asarray(device).astype(str), "scene": np.asarray(scene).astype(str),
                       "c": np.asarray(correct, dtype=float)})
    means = df.groupby(["device", "scene"], sort=True)["c"].mean()
    return 100.0 * float(means.groupby(level="device").mean().mean())


def paired_stratified_test(device: Sequence[str], scene: Sequence[str], correct_a: Sequence[float],
                           correct_b: Sequence[float], *, alternative: str = "greater") -> StratifiedResult:
    """The paired z-test of two models' Avg on the same clips, stratified by device and scene (module
    docstring). ``device``/``scene`` label each clip (its true scene), ``correct_a``/``correct_b`` are
    each model's correctness per clip (0/1, or fractions: the mean over seeds), all of one length.
    ``diff``/``se`` in percentage points; ``alternative`` as :func:`p_from_z` (default H1: a better).
    Raises ResultsError for no clips or a correctness outside [0, 1], ConfigError for lengths that differ."""
    dev, scn = np.asarray(device).astype(str), np.asarray(scene).astype(str)
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if not len(dev) == len(scn) == len(a) == len(b):
        raise ConfigError(f"paired test: device, scene, correct_a, correct_b have lengths "
                          f"{len(dev)}, {len(scn)}, {len(a)}, {len(b)}")
    for name, x in (("correct_a", a), ("correct_b", b)):
        if x.size and (np.isnan(x).any() or x.min() < 0 or x.max() > 1):
            raise ResultsError(f"paired test: {name} must lie in [0, 1], got values from {np.nanmin(x)} to {np.nanmax(x)}")
    strata = avg_weights(dev, scn)
    df = pd.DataFrame({"device": dev, "scene": scn, "d": a - b})
    g = df.groupby(["device", "scene"], sort=True)["d"]
    stats = pd.DataFrame({"mean": g.mean(), "var": g.var(ddof=1)}).reset_index()
    device_var = df.groupby("device")["d"].var(ddof=1)
    strata = strata.merge(stats, on=["device", "scene"])
    lone = strata["n"] < 2
    if lone.any():
        strata.loc[lone, "var"] = strata.loc[lone, "device"].map(device_var).fillna(1.0).to_numpy(dtype=float)
    diff = float((strata["w"] * strata["mean"]).sum())
    var = float((strata["w"] ** 2 * strata["var"] / strata["n"]).sum())
    z = _z(diff, var)
    n_dev = strata.groupby("device")["n"].sum()
    return StratifiedResult(100.0 * diff, 100.0 * math.sqrt(var), z, p_from_z(z, alternative), int(len(dev)),
                            effective_n(n_dev.to_dict()))


def device_stratified_ztest(acc_a: Mapping[str, float], n_a: Mapping[str, int], acc_b: Mapping[str, float],
                            n_b: Mapping[str, int] | None = None, *, alternative: str = "greater") -> StratifiedResult:
    """The unpaired device-stratified z-test of two Avgs from per-device accuracies (percent) and test
    clips (module docstring); ``n_b`` defaults to ``n_a`` (both models on the same clips). ``n_eff`` is
    :func:`effective_n` of ``n_a``. Raises ConfigError when the devices differ, an accuracy is not a
    percentage or a device has no clips."""
    n_b = n_a if n_b is None else n_b
    devices = list(acc_a)
    if not devices or {*devices} != {*acc_b} or {*devices} != {*n_a} or {*devices} != {*n_b}:
        raise ConfigError(f"device-stratified test: the devices differ (acc_a {sorted(acc_a)}, acc_b {sorted(acc_b)}, "
                          f"n_a {sorted(n_a)}, n_b {sorted(n_b)})")
    var = 0.0
    for d in devices:
        pa, pb, na, nb = float(acc_a[d]) / 100.0, float(acc_b[d]) / 100.0, int(n_a[d]), int(n_b[d])
        if not (0.0 <= pa <= 1.0 and 0.0 <= pb <= 1.0):
            raise ConfigError(f"device-stratified test: device {d}: accuracies {acc_a[d]!r}, {acc_b[d]!r} are not "
                              "percentages in [0, 100]")
        if na <= 0 or nb <= 0:
            raise ConfigError(f"device-stratified test: device {d} has {na} / {nb} test clips")
        pooled = (na * pa + nb * pb) / (na + nb)
        var += pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb)
    var /= len(devices) ** 2
    diff = (sum(float(acc_a[d]) for d in devices) - sum(float(acc_b[d]) for d in devices)) / len(devices) / 100.0
    z = _z(diff, var)   # var = 0 only when every device is all right or all wrong in both: diff = 0
    return StratifiedResult(100.0 * diff, 100.0 * math.sqrt(var), z, p_from_z(z, alternative),
                            int(sum(int(n_a[d]) for d in devices)), effective_n({d: n_a[d] for d in devices}))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (module docstring), in the input order. NaN p-values (tests
    not run) stay NaN and do not count in the family size ``m``."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    if (p[ok] < 0).any() or (p[ok] > 1).any():
        raise ConfigError(f"holm: p-values must lie in [0, 1], got {p[ok].tolist()}")
    m = ok.size
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out
