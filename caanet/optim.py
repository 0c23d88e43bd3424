"""Adam (paper Sec. IV-B) through torch's own functional update, without ``torch.optim.Optimizer``.

Why not ``torch.optim.Adam``: every ``torch.optim.Optimizer`` imports ``torch._dynamo`` on its
construction and first step (its methods are wrapped for ``torch.compile``), which costs about
1.2 s of a 1-thread job; a default-preset cell trains in about as long. :class:`Adam` keeps the
per-parameter state and calls :func:`torch.optim.adam.adam`, the function ``torch.optim.Adam``
itself calls, so the arithmetic is torch's (Kingma & Ba 2015, Algorithm 1, with torch's
``eps`` outside the square root). ``fused=True`` (the default where torch has the kernel: CPU and
CUDA) updates each parameter in one kernel instead of about six operator calls, which matters for
networks as small as the default preset's.

:meth:`Adam.state_dict` has the layout of ``torch.optim.Adam.state_dict()`` (``state`` keyed by
parameter position, ``param_groups`` with ``params`` positions), so either loads the other's.
"""

from __future__ import annotations

from typing import Iterable

import torch

from caanet.errors import ConfigError


class Adam:
    """Adam over ``params`` (an iterable of tensors that require grad).

    ``lr`` may be changed between steps through ``param_groups[0]["lr"]`` (as for torch optimisers).
    ``fused``: None picks the fused kernel where torch supports it for the parameters' device type,
    else torch's single-tensor loop. Raises ConfigError for a bad hyperparameter.
    """

    def __init__(self, params: Iterable[torch.Tensor], *, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, fused: bool | None = None):
        self.params = [p for p in params]
        if not self.params:
            raise ConfigError("Adam: no parameters to optimise")
        if not lr > 0 or not eps > 0 or not all(0 <= b < 1 for b in betas):
            raise ConfigError(f"Adam: lr={lr!r}, eps={eps!r} must be > 0 and betas={betas!r} in [0, 1)")
        if fused is None:
            fused = _fused_supported(self.params[0].device)
        self.fused = bool(fused)
        self.param_groups = [{
            "lr": float(lr), "betas": (float(betas[0]), float(betas[1])), "eps": float(eps), "weight_decay": 0.0,
            "amsgrad": False, "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
            "fused": self.fused or None, "decoupled_weight_decay": False,
        }]
        self.state: dict[int, dict[str, torch.Tensor]] = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def _state(self, i: int, p: torch.Tensor) -> dict:
        st = self.state.get(i)
        if st is None:
            # step as a float32 tensor (on the parameter's device for the fused kernel), as torch.optim.Adam keeps it
            step_dev = p.device if self.fused else torch.device("cpu")
            st = self.state[i] = {"step": torch.zeros((), dtype=torch.float32, device=step_dev),
                                  "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                                  "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        return st

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every parameter that has a gradient."""
        from torch.optim.adam import adam

        group = self.param_groups[0]
        params, grads, avgs, sqs, steps = [], [], [], [], []
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            st = self._state(i, p)
            params.append(p)
            grads.append(p.grad)
            avgs.append(st["exp_avg"])
            sqs.append(st["exp_avg_sq"])
            steps.append(st["step"])
        if not params:
            return
        adam(params, grads, avgs, sqs, [], steps, foreach=False, fused=self.fused or None, capturable=False,
             differentiable=False, grad_scale=None, found_inf=None, has_complex=False, amsgrad=False,
             beta1=group["betas"][0], beta2=group["betas"][1], lr=group["lr"], weight_decay=0.0, eps=group["eps"],
             maximize=False)

    def state_dict(self) -> dict:
        """``{"state": {position: {"step", "exp_avg", "exp_avg_sq"}}, "param_groups": [...]}`` (torch's layout)."""
        group = dict(self.param_groups[0])
        group["params"] = list(range(len(self.params)))
        return {"state": {i: dict(st) for i, st in self.state.items()}, "param_groups": [group]}

    def load_state_dict(self, state: dict) -> None:
        """Load :meth:`state_dict` output (or ``torch.optim.Adam``'s); ConfigError if it does not fit."""
        try:
            groups, st = state["param_groups"], state["state"]
        except (KeyError, TypeError):
            raise ConfigError("Adam.load_state_dict: expected keys 'state' and 'param_groups'") from None
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ConfigError(f"Adam.load_state_dict: {sum(len(g['params']) for g in groups)} parameters in "
                              f"{len(groups)} group(s), this optimiser has {len(self.params)} in one")
        pos = {pid: i for i, pid in enumerate(groups[0]["params"])}
        self.state = {}
        for pid, s in st.items():
            i = pos[pid]
            p = self.params[i]
            if s["exp_avg"].shape != p.shape:
                raise ConfigError(f"Adam.load_state_dict: state of parameter {i} has shape {tuple(s['exp_avg'].shape)}, "
                                  f"the parameter {tuple(p.shape)}")
            step_dev = p.device if self.fused else torch.device("cpu")
            self.state[i] = {
                "step": torch.as_tensor(s["step"], dtype=torch.float32).to(step_dev).reshape(()),
                "exp_avg": s["exp_avg"].to(device=p.device, dtype=p.dtype),
                "exp_avg_sq": s["exp_avg_sq"].to(device=p.device, dtype=p.dtype),
            }
        for key in ("lr", "betas", "eps"):
            if key in groups[0]:
                self.param_groups[0][key] = groups[0][key]


def _fused_supported(device: torch.device) -> bool:
    """Whether torch has a fused Adam kernel for ``device`` (CPU since torch 2.4, CUDA)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:
        return False
    return device.type in _get_fused_kernels_supported_devices()
