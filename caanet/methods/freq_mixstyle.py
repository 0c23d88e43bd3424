"""Freq-MixStyle: mixing the frequency-wise statistics of spectrograms within a batch (training only).

MixStyle (K. Zhou et al., ICLR 2021) mixes the instance statistics of two samples' feature maps; the
frequency-wise variant for acoustic scene classification (B. Kim et al., 2022; used by F. Schmid et
al., CP-JKU, DCASE 2022 Task 1, and the DCASE 2024/2025 Task 1 baselines) takes them per frequency
bin over time, where a recording device leaves its mark. With probability ``p`` per batch, each
spectrogram ``x_b`` ``(T, F)`` is normalised by its own frequency-wise mean and standard deviation
over time,

    mu_b(f) = mean_t x_b(t, f),    sigma_b(f) = sqrt(var_t x_b(t, f) + eps),

and de-normalised with a mix of its own and a random batch-mate's statistics::

    y_b = (x_b - mu_b) / sigma_b * (lam_b sigma_b + (1 - lam_b) sigma_pi(b)) + (lam_b mu_b + (1 - lam_b) mu_pi(b))

with ``lam_b ~ Beta(alpha, alpha)`` and ``pi`` a random permutation of the batch. The DCASE baselines
use ``p = 0.4``, ``alpha = 0.3`` (``eps = 1e-6``, the variance's; the statistics carry no gradient).
The per-mel standardisation of the cache commutes with it (an affine map per frequency bin), so it is
applied to the standardised batch.

Randomness: ``(apply, lam, pi)`` of iteration ``i`` are drawn from a NumPy generator seeded with
``(seed, i, SALT)``, a pure function of the cell's seed and the iteration (like
:func:`caanet.data.loader.batch_indices`): a resumed job draws exactly what an uninterrupted one does,
and the global torch RNG is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SALT = 0xF2E0
"""Separates this method's random stream from the batch order's (seeded with ``(seed, epoch)``)."""
EPS = 1e-6


@dataclass(frozen=True)
class FreqMixStyleSettings:
    """``p``: probability that a batch is mixed; ``alpha``: the Beta(alpha, alpha) of the mix weight
    (the schema's ``#/$defs/methods/properties/freq_mixstyle`` documents both)."""

    p: float = 0.4
    alpha: float = 0.3


def frequency_statistics(x, eps: float = EPS):
    """``(mu, sigma)`` of a batch ``x`` ``(B, T, F)`` (torch tensor): each ``(B, 1, F)``, the mean and
    ``sqrt(var + eps)`` over time (the population variance, as instance normalisation)."""
    mu = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, keepdim=True, unbiased=False)
    return mu, (var + eps).sqrt()


def mix_frequency_statistics(x, lam, perm, eps: float = EPS):
    """Freq-MixStyle of a batch ``x`` ``(B, T, F)`` with mix weights ``lam`` ``(B,)`` (the weight of each
    clip's own statistics) and batch-mates ``perm`` ``(B,)`` (indices): the module docstring's ``y``.
    ``lam == 1`` returns ``x`` (up to rounding). Torch tensors on one device; returns a new tensor."""
    import torch

    with torch.no_grad():
        mu, sigma = frequency_statistics(x, eps)
        lam = lam.to(x.dtype).view(-1, 1, 1)
        mu_mix = lam * mu + (1 - lam) * mu[perm]
        sigma_mix = lam * sigma + (1 - lam) * sigma[perm]
        return (x - mu) / sigma * sigma_mix + mu_mix


def draws(settings: FreqMixStyleSettings, seed: int, iteration: int, batch: int):
    """``(apply, lam, perm)`` of ``iteration``: whether the batch is mixed (probability ``p``), the
    ``batch`` Beta(alpha, alpha) weights and a permutation (NumPy arrays); a pure function of its
    arguments."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(iteration), SALT]))
    apply = bool(rng.random() < settings.p)
    lam = rng.beta(settings.alpha, settings.alpha, size=batch)
    perm = rng.permutation(batch)
    return apply, lam, perm


class FreqMixStyle:
    """The training transform of a cell: ``transform(x, positions, iteration) -> x`` (the same tensor
    when the batch is not mixed). ``positions`` is unused (the mix does not depend on which clips)."""

    def __init__(self, settings: FreqMixStyleSettings, *, seed: int, data=None, derived=None, dev=None, params=None):
        self.settings, self.seed = settings, int(seed)

    def __call__(self, x, positions, iteration: int):
        import torch

        apply, lam, perm = draws(self.settings, self.seed, iteration, x.shape[0])
        if not apply or x.shape[0] < 2:
            return x
        return mix_frequency_statistics(x, torch.from_numpy(lam).to(x.device),
                                        torch.from_numpy(perm).to(x.device))

    def describe(self) -> dict:
        """What ``evaluation.json`` records of the transform."""
        return {"p": self.settings.p, "alpha": self.settings.alpha, "eps": EPS}
