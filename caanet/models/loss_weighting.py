"""Learned lambda: homoscedastic uncertainty weighting of the scene and device losses (beyond the paper).

The paper (Eq. 2) trains multi-task CAA-Net on ``L = L_scene + lambda * L_device`` with lambda switched
by hand (1 until CNN-d is accurate, then 1e-4) and names learning the trade-off as future work. This
module learns it with the homoscedastic task uncertainty of Kendall, Gal and Cipolla, "Multi-Task
Learning Using Uncertainty to Weigh Losses for Scene Geometry and Semantics", CVPR 2018:

    L = exp(-s_scene) * L_scene + s_scene + exp(-s_device) * L_device + s_device

with one learned log-variance ``s_i = log sigma_i^2`` per task (initialised to 0, i.e. both weights 1,
trained by the same optimiser as the network). This is twice Kendall et al.'s Eq. 7 written with
``s = log sigma^2`` (their recommended parameterisation, Sec. 3.2), the form most implementations use
for classification losses as well; the ``+ s_i`` term keeps ``s_i`` from growing without bound. For
fixed losses the optimum is ``s_i = log L_i``, so each task is weighted by ``1 / L_i``.

**The effective lambda.** Dividing ``L`` by the scene weight ``exp(-s_scene)`` gives Eq. 2's form
``L_scene + lambda_eff * L_device`` (plus terms without network parameters), with

    lambda_eff = exp(-s_device) / exp(-s_scene) = exp(s_scene - s_device),

and an overall step-size factor ``exp(-s_scene)`` on the network's gradients (Adam, being invariant to
a constant gradient scale, mostly undoes that factor). ``metrics.csv``'s ``lambda`` column records
``lambda_eff`` in effect at the logged iteration's step, and ``log_var_scene`` / ``log_var_device``
the two ``s_i`` it was computed from.
"""

from __future__ import annotations

import torch
from torch import nn

from caanet.errors import ConfigError

TASKS = ("scene", "device")


class UncertaintyWeighting(nn.Module):
    """``forward(loss_scene, loss_device) -> total`` (scalar tensors); parameters ``log_var`` ``(2,)``.

    ``log_var[i]`` is ``s_i = log sigma_i^2`` of task ``TASKS[i]`` (float32, initialised to
    ``init``). The total is ``sum_i exp(-s_i) * L_i + s_i`` (Kendall, Gal and Cipolla, CVPR 2018).
    """

    def __init__(self, init: float = 0.0):
        super().__init__()
        self.log_var = nn.Parameter(torch.full((len(TASKS),), float(init), dtype=torch.float32))

    def forward(self, loss_scene: torch.Tensor, loss_device: torch.Tensor) -> torch.Tensor:
        losses = torch.stack([loss_scene.float().reshape(()), loss_device.float().reshape(())])
        return (torch.exp(-self.log_var) * losses + self.log_var).sum()

    def effective_lambda(self) -> float:
        """``exp(s_scene - s_device)``: Eq. 2's lambda that the current weights amount to."""
        s = self.log_var.detach()
        return float(torch.exp(s[0] - s[1]))

    def log_vars(self) -> dict[str, float]:
        """``{"scene": s_scene, "device": s_device}`` as floats."""
        return {t: float(v) for t, v in zip(TASKS, self.log_var.detach().cpu().tolist())}


class LearnedLambda:
    """The learned-lambda counterpart of :class:`caanet.training.LambdaRule` (same interface).

    It holds the :class:`UncertaintyWeighting` module whose parameters the trainer adds to its
    optimiser. ``value`` is the current effective lambda; ``combine`` gives the training loss and
    remembers the ``s_i`` it used (``last_log_vars``, for metrics.csv). There are no device-accuracy
    checks (``due`` is always False), no switch (``switched_at`` is None) and no ``source``.
    """

    source = None
    sticky = False

    def __init__(self, init: float = 0.0):
        self.weighting = UncertaintyWeighting(init)
        self.switched_at = None
        self.history: list = []
        self.last_log_vars: dict[str, float] | None = None

    @property
    def value(self) -> float:
        return self.weighting.effective_lambda()

    def due(self, iteration: int) -> bool:
        return False

    def update(self, iteration: int, device_acc: float) -> float:  # pragma: no cover - never due
        raise ConfigError("the learned lambda is not switched by device accuracy")

    def combine(self, loss_scene: torch.Tensor, loss_device: torch.Tensor) -> torch.Tensor:
        self.last_log_vars = self.weighting.log_vars()
        return self.weighting(loss_scene, loss_device)

    def parameters(self):
        return list(self.weighting.parameters())

    def to(self, dev) -> "LearnedLambda":
        self.weighting.to(dev)
        return self

    def state_dict(self) -> dict:
        return {"log_var": [float(v) for v in self.weighting.log_var.detach().cpu().tolist()]}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.weighting.log_var.copy_(torch.tensor(state["log_var"], dtype=torch.float32))
