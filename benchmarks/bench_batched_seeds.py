"""Training a cell's seeds together in one process, as one batched network: is a seed's step cheaper?

Usage::

    python3 benchmarks/bench_batched_seeds.py             # S = 1, 2, 3, 5 seeds, 20 interleaved repeats
    python3 benchmarks/bench_batched_seeds.py --quick     # S = 1, 3; 3 repeats (about a minute)
    python3 benchmarks/bench_batched_seeds.py --topologies atrous --strategies multi_task --seeds 3 --json out.json

The default preset's attention networks (channels 4-8-8-16, CNN-d 4-8, 31x64 inputs, batch 16 per
seed, fidelity ``--fidelity``) for the three topologies and the strategies joint (no CNN-d),
teacher forcing (the true device conditions block 3) and multi-task (CNN-d's argmax conditions
block 3, loss ``scene + 1 * device``). Each seed has its own initialisation (``torch.manual_seed(s)``)
and its own batch of 16 clips, as each seed of a cell has its own batch order. A step of S seeds:

``a`` (the baseline)
    S independent models, each stepped as ``caanet.training.CellTrainer.step`` does (forward,
    ``nll_loss``, ``zero_grad``, backward, fused ``caanet.optim.Adam``), one after the other.
``b_autograd`` / ``b_grad``
    ``torch.func``: the S models' parameters and buffers stacked along a seed axis
    (``stack_module_state``), ``functional_call`` of one model ``vmap``-ed over the seeds (each its
    own batch; BatchNorm's running statistics are batched buffers, updated in place per seed), the
    gradient by autograd through ``vmap`` of the per-seed losses (``b_autograd``: their sum's
    backward) or by ``vmap(torch.func.grad(loss))`` (``b_grad``), and one fused Adam step over the
    stacked tensors (Adam is element-wise, so each seed's slice gets its own update).
    ``vmap`` cannot run two parts of ``CAANet.forward`` as written, which the benchmark replaces
    (same values): the input's ``contiguous(memory_format=channels_last)`` ("NYI: querying
    is_contiguous inside of vmap for memory_format other than torch.contiguous_format"; the map
    stays NCHW) and the device one-hot (``device_one_hot``: teacher forcing's range check is
    data-dependent control flow, multi-task's ``scatter_`` writes a batched index into an unbatched
    tensor); the one-hot becomes ``(index[:, None] == arange(n_devices)).float()``.
``c``
    one network of grouped convolutions (``groups = S``): the seeds' channels side by side (seed-major),
    each seed's batch on its own input channel, so a conv, BatchNorm (per channel, hence per seed),
    ReLU and pooling treat the seeds apart; the attention head as grouped 1x1 convs, CNN-d's linear
    layer and the conditioning as per-seed (block-diagonal) products; channels-last like ``a``.

Before timing, each of ``b`` and ``c`` is checked against ``a``: per-seed losses and every gradient
of the first step, then losses, weights and BatchNorm running statistics after ``--check-steps``
Adam steps, within ``--atol`` (losses) and ``--rtol`` (each tensor's max difference relative to
its largest value). Reported: ms per seed and step (minimum / median, CPU time of this process, one
thread, variants interleaved) and the median ratio to ``a``.
"""

from __future__ import annotations

import argparse
import copy
import json
import types

import torch
import torch.nn.functional as F
from torch import nn

from benchutil import (BATCH, INPUT_SHAPE, N_CLASSES, N_DEVICES, STRATEGIES, TOPOLOGIES, interleaved, machine_line,
                       matmul_figures, model_config, setup, stats_ms)

CL = torch.channels_last


# --------------------------------------------------------------------------------------------------
# The data and the baseline
# --------------------------------------------------------------------------------------------------


def seed_models(cfg, n_seeds: int) -> list:
    from caanet.models import build_model

    models = []
    for s in range(n_seeds):
        torch.manual_seed(s)
        models.append(build_model(cfg).train())
    return models


def seed_batches(n_seeds: int, step: int = 0):
    """``X (S, B, T, M)``, ``Y (S, B)``, ``D (S, B)``: one batch per seed (a different one per ``step``)."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(n_seeds, BATCH, *INPUT_SHAPE, generator=g)
    y = torch.randint(0, N_CLASSES, (n_seeds, BATCH), generator=g)
    d = torch.randint(0, N_DEVICES, (n_seeds, BATCH), generator=g)
    return x, y, d


def _loss(out, y, d, multi: bool):
    loss = F.nll_loss(out.scene, y)
    return loss + F.nll_loss(out.device, d) if multi else loss


class Sequential:
    """(a): S models and S optimisers, stepped one after the other."""

    def __init__(self, models, lr: float):
        from caanet.optim import Adam

        self.models = models
        self.cfg = models[0].config
        self.opts = [Adam(m.parameters(), lr=lr) for m in models]

    def losses(self, x, y, d) -> torch.Tensor:
        """The per-seed losses with gradients (no step): for the check."""
        oracle, multi = self.cfg.device_source == "oracle", self.cfg.device_source == "predicted"
        return torch.stack([_loss(m(x[s], d[s] if oracle else None), y[s], d[s], multi)
                            for s, m in enumerate(self.models)])

    def step(self, x, y, d) -> None:
        oracle, multi = self.cfg.device_source == "oracle", self.cfg.device_source == "predicted"
        for s, (m, opt) in enumerate(zip(self.models, self.opts)):
            loss = _loss(m(x[s], d[s] if oracle else None), y[s], d[s], multi)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def state(self, s: int) -> dict[str, torch.Tensor]:
        return self.models[s].state_dict()

    def grads(self, s: int) -> dict[str, torch.Tensor]:
        return {n: p.grad for n, p in self.models[s].named_parameters()}


# --------------------------------------------------------------------------------------------------
# (b) torch.func
# --------------------------------------------------------------------------------------------------


def _vmap_input(self, x):
    return x.unsqueeze(1)  # no channels-last inside vmap


def _vmap_one_hot(self, x4, device):
    """``CAANet.device_one_hot`` without its range check and ``scatter_`` (neither runs under vmap); same values."""
    cfg = self.config
    if cfg.device_source == "none":
        return None, None
    devices = torch.arange(cfg.n_devices, device=x4.device)
    if cfg.device_source == "oracle":
        return (device[:, None] == devices).float(), None
    logprob = self.device_net(x4)
    return (logprob.detach().argmax(dim=1)[:, None] == devices).float(), logprob


class FuncVmap:
    """(b): stacked parameters and buffers, ``functional_call`` vmapped over the seeds."""

    def __init__(self, models, lr: float, use_grad: bool):
        from torch.func import functional_call, grad, stack_module_state, vmap

        from caanet.optim import Adam

        self.cfg = models[0].config
        params, self.buffers = stack_module_state(models)
        self.params = {k: v.detach().clone().requires_grad_(not use_grad) for k, v in params.items()}
        self.buffers = {k: v.clone() for k, v in self.buffers.items()}
        base = copy.deepcopy(models[0]).to("meta")
        base._check_input = types.MethodType(_vmap_input, base)
        base.device_one_hot = types.MethodType(_vmap_one_hot, base)
        oracle, multi = self.cfg.device_source == "oracle", self.cfg.device_source == "predicted"

        def loss(p, b, x, y, d):
            return _loss(functional_call(base, (p, b), (x, d if oracle else None)), y, d, multi)

        self.use_grad = use_grad
        self.vloss = vmap(loss, randomness="error")
        self.vgrad = vmap(grad(loss), randomness="error")
        self.opt = Adam(list(self.params.values()), lr=lr)

    def losses(self, x, y, d) -> torch.Tensor:
        """The per-seed losses (a forward, running statistics updated once); for ``b_grad`` the gradients of the
        same forward are set by the ``vmap(grad)`` path, on a copy of the buffers as they were."""
        before = {k: v.clone() for k, v in self.buffers.items()} if self.use_grad else None
        out = self.vloss(self.params, self.buffers, x, y, d)
        if self.use_grad:
            grads = self.vgrad(self.params, before, x, y, d)
            for k, p in self.params.items():
                p.grad = grads[k]
        return out

    def step(self, x, y, d) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.use_grad:
            grads = self.vgrad(self.params, self.buffers, x, y, d)
            for k, p in self.params.items():
                p.grad = grads[k]
        else:
            self.vloss(self.params, self.buffers, x, y, d).sum().backward()
        self.opt.step()

    def state(self, s: int) -> dict[str, torch.Tensor]:
        return {**{k: v[s] for k, v in self.params.items()}, **{k: v[s] for k, v in self.buffers.items()}}

    def grads(self, s: int) -> dict[str, torch.Tensor]:
        return {k: v.grad[s] for k, v in self.params.items()}


# --------------------------------------------------------------------------------------------------
# (c) grouped convolutions
# --------------------------------------------------------------------------------------------------


def _cat(tensors) -> nn.Parameter:
    return nn.Parameter(torch.cat([t.detach() for t in tensors]).contiguous())


def _stack(tensors) -> nn.Parameter:
    return nn.Parameter(torch.stack([t.detach() for t in tensors]).contiguous())


class GroupedBlock(nn.Module):
    """S ``ConvBlock`` s side by side: conv with ``groups=S``, BatchNorm over S*C channels, ReLU, pool."""

    def __init__(self, blocks):
        super().__init__()
        first = blocks[0]
        self.groups = len(blocks)
        self.conv = nn.Conv2d(first.conv.in_channels * self.groups, first.conv.out_channels * self.groups,
                              first.conv.kernel_size, padding=first.conv.padding, dilation=first.conv.dilation,
                              groups=self.groups, bias=False)
        self.conv.weight = _cat(b.conv.weight for b in blocks)
        self.bn = nn.BatchNorm2d(self.conv.out_channels)
        with torch.no_grad():
            for name in ("weight", "bias"):
                getattr(self.bn, name).copy_(torch.cat([getattr(b.bn, name) for b in blocks]))
            for name in ("running_mean", "running_var"):
                getattr(self.bn, name).copy_(torch.cat([getattr(b.bn, name) for b in blocks]))
            self.bn.num_batches_tracked.copy_(first.bn.num_batches_tracked)
        self.pool = first.pool

    def forward(self, x, cond=None):
        y = self.conv(x)
        if cond is not None:
            y = y + cond[:, :, None, None]
        y = F.relu(self.bn(y))
        return F.max_pool2d(y, 2) if self.pool else y


class GroupedNet(nn.Module):
    """(c): S CAA-Nets (attention head) as one network of grouped convolutions.

    ``forward(x (S, B, T, M), d (S, B) or None) -> (scene (S, B, K), device (S, B, N) or None)``.
    """

    def __init__(self, models, gemm_head: bool = False):
        super().__init__()
        self.gemm_head = gemm_head
        cfg = self.config = models[0].config
        if cfg.pooling != "att":
            raise ValueError("the grouped network has the attention head only")
        self.S = s = len(models)
        self.blocks = nn.ModuleList(GroupedBlock([m.backbone.blocks[i] for m in models])
                                    for i in range(len(models[0].backbone.blocks)))
        heads = [m.head for m in models]
        self.fidelity = heads[0].fidelity
        self.k = heads[0].cla.out_channels
        self.cla_w, self.cla_b = _cat(h.cla.weight for h in heads), _cat(h.cla.bias for h in heads)
        self.att_w, self.att_b = _cat(h.att.weight for h in heads), _cat(h.att.bias for h in heads)
        if cfg.device_source != "none":
            self.cond_w = _stack(m.conditioning.weight.flatten(1) for m in models)  # (S, C, N)
            self.cond_b = _stack(m.conditioning.bias for m in models)  # (S, C)
        if cfg.device_source == "predicted":
            self.dblocks = nn.ModuleList(GroupedBlock([m.device_net.blocks[i] for m in models])
                                         for i in range(len(models[0].device_net.blocks)))
            self.fc_w = _stack(m.device_net.fc.weight for m in models)  # (S, N, C)
            self.fc_b = _stack(m.device_net.fc.bias for m in models)  # (S, N)
        self.to(memory_format=CL)

    def forward(self, x, d=None):
        from caanet.models.heads import ATT_NORM_EPS, PAPER_LOG_EPS

        cfg, s = self.config, self.S
        x = x.transpose(0, 1).contiguous(memory_format=CL)  # (B, S, T, M): seed s's clip on channel s
        batch = x.shape[0]
        device_out, cond = None, None
        devices = torch.arange(cfg.n_devices)
        if cfg.device_source == "predicted":
            h = x
            for block in self.dblocks:
                h = block(h)
            z = torch.amax(h, dim=(2, 3)).view(batch, s, -1)  # (B, S, C)
            device_out = F.log_softmax(torch.einsum("bsc,snc->bsn", z, self.fc_w) + self.fc_b, dim=-1)
            one_hot = (device_out.detach().argmax(dim=-1)[..., None] == devices).float()  # (B, S, N)
        elif cfg.device_source == "oracle":
            one_hot = (d.t()[..., None] == devices).float()
        if cfg.device_source != "none":
            cond = (torch.einsum("bsn,scn->bsc", one_hot, self.cond_w) + self.cond_b).reshape(batch, -1)
        h = x
        for i, block in enumerate(self.blocks, start=1):
            h = block(h, cond if i == cfg.cond_layer else None)
        p, q = h.shape[2:]
        fid = self.fidelity
        if self.gemm_head:  # per-seed GEMMs (K, C) @ (C, B*PQ) -> classes before positions (bench_conv_layout.py)
            c = h.shape[1] // s
            ht = h.permute(0, 2, 3, 1).reshape(batch * p * q, s, c).permute(1, 2, 0)  # (S, C, B*PQ), a view
            cla = torch.baddbmm(self.cla_b.view(s, self.k, 1), self.cla_w.view(s, self.k, c), ht).view(s, self.k, batch, p * q)
            att = torch.baddbmm(self.att_b.view(s, self.k, 1), self.att_w.view(s, self.k, c), ht).view(s, self.k, batch, p * q)
            a = torch.sigmoid(att) if fid.attention_weight == "sigmoid" else torch.clamp(torch.sigmoid(att) + 0.1, 0.1, 0.9)
            norm = a / a.sum(dim=3, keepdim=True).clamp_min(ATT_NORM_EPS)
            if fid.attention_class_act == "softmax":
                scene = torch.log((norm * torch.softmax(cla, dim=1)).sum(dim=3).clamp_min(PAPER_LOG_EPS))
            else:
                scene = (norm * torch.log_softmax(cla, dim=1)).sum(dim=3)
            scene = scene.permute(2, 0, 1)  # (B, S, K)
        else:
            cla = F.conv2d(h, self.cla_w, self.cla_b, groups=s).view(batch, s, self.k, p, q)
            att = F.conv2d(h, self.att_w, self.att_b, groups=s).view(batch, s, self.k, p, q)
            a = torch.sigmoid(att) if fid.attention_weight == "sigmoid" else torch.clamp(torch.sigmoid(att) + 0.1, 0.1, 0.9)
            norm = a / a.sum(dim=(3, 4), keepdim=True).clamp_min(ATT_NORM_EPS)
            if fid.attention_class_act == "softmax":
                scene = torch.log((norm * torch.softmax(cla, dim=2)).sum(dim=(3, 4)).clamp_min(PAPER_LOG_EPS))
            else:
                scene = (norm * torch.log_softmax(cla, dim=2)).sum(dim=(3, 4))
        return scene.transpose(0, 1), (device_out.transpose(0, 1) if device_out is not None else None)

    # the per-seed views of the parameters, in CAANet's names and shapes
    def seed_tensors(self, s: int, grads: bool = False) -> dict[str, torch.Tensor]:
        def part(t, n_parts=self.S):
            t = t.grad if grads else t
            return t.reshape(n_parts, -1, *t.shape[1:])[s]

        out = {}
        for prefix, blocks in (("backbone.blocks", self.blocks), ("device_net.blocks", getattr(self, "dblocks", []))):
            for i, b in enumerate(blocks):
                out[f"{prefix}.{i}.conv.weight"] = part(b.conv.weight)
                out[f"{prefix}.{i}.bn.weight"] = part(b.bn.weight)
                out[f"{prefix}.{i}.bn.bias"] = part(b.bn.bias)
                if not grads:
                    out[f"{prefix}.{i}.bn.running_mean"] = part(b.bn.running_mean)
                    out[f"{prefix}.{i}.bn.running_var"] = part(b.bn.running_var)
        out["head.cla.weight"], out["head.cla.bias"] = part(self.cla_w), part(self.cla_b)
        out["head.att.weight"], out["head.att.bias"] = part(self.att_w), part(self.att_b)
        if hasattr(self, "cond_w"):
            w = (self.cond_w.grad if grads else self.cond_w)[s]
            out["conditioning.weight"] = w.view(*w.shape, 1, 1)
            out["conditioning.bias"] = (self.cond_b.grad if grads else self.cond_b)[s]
        if hasattr(self, "fc_w"):
            out["device_net.fc.weight"] = (self.fc_w.grad if grads else self.fc_w)[s]
            out["device_net.fc.bias"] = (self.fc_b.grad if grads else self.fc_b)[s]
        return out


class Grouped:
    """(c) with its optimiser."""

    def __init__(self, models, lr: float, gemm_head: bool = False):
        from caanet.optim import Adam

        self.net = GroupedNet(models, gemm_head).train()
        self.multi = self.net.config.device_source == "predicted"
        self.opt = Adam(self.net.parameters(), lr=lr)

    def losses(self, x, y, d) -> torch.Tensor:
        scene, device = self.net(x, d)  # (S, B, K), (S, B, N)
        loss = F.nll_loss(scene.transpose(1, 2), y, reduction="none").mean(dim=1)  # per seed
        if self.multi:
            loss = loss + F.nll_loss(device.transpose(1, 2), d, reduction="none").mean(dim=1)
        return loss

    def step(self, x, y, d) -> None:
        loss = self.losses(x, y, d).sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def state(self, s: int) -> dict[str, torch.Tensor]:
        return self.net.seed_tensors(s)

    def grads(self, s: int) -> dict[str, torch.Tensor]:
        return self.net.seed_tensors(s, grads=True)


# --------------------------------------------------------------------------------------------------
# The check and the timing
# --------------------------------------------------------------------------------------------------


NOISE_FLOOR = 1e-5


def noise_driven(cfg, grads: list[dict[str, torch.Tensor]]) -> set[str]:
    """The state that float rounding alone moves, reported apart (``noise_driven_abs``) and not compared.

    Eq. 1's conditioning is added before BatchNorm, which removes any per-channel constant: the bias's
    gradient is zero in exact arithmetic, and so is the weight's while the one-hot is the same for every clip of
    the batch (an untrained CNN-d names one device for all). Rounding (~1e-7 against ~1e-2 elsewhere) is then all
    there is, and Adam turns that noise into steps of about lr in either direction, in the seeds trained apart
    too; the running mean of the block the term enters follows it. Found here as the conditioning bias, the
    running mean of its block, and every tensor whose first-step gradient (``grads``, one dict per seed) stays
    below ``NOISE_FLOOR`` times the seed's largest. None of them changes a training-mode output."""
    names = set()
    if cfg.device_source != "none":
        names |= {"conditioning.bias", f"backbone.blocks.{cfg.cond_layer - 1}.bn.running_mean"}
    for g in grads:
        top = max(float(t.abs().max()) for t in g.values())
        names |= {n for n, t in g.items() if float(t.abs().max()) < NOISE_FLOOR * top}
    return names


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def float64_grads(models, x, y, d) -> list[dict[str, torch.Tensor]]:
    """Each seed's first-step gradients computed in float64 (copies of ``models``): the reference that says
    which float32 formulation rounds less."""
    cfg = models[0].config
    oracle, multi = cfg.device_source == "oracle", cfg.device_source == "predicted"
    out = []
    for s, model in enumerate(models):
        m = copy.deepcopy(model).double()
        if m.conditioning is not None:  # the model makes its one-hot float32
            m.conditioning.forward = types.MethodType(
                lambda self, one_hot: F.linear(one_hot.double(), self.weight.flatten(1), self.bias), m.conditioning)
        _loss(m(x[s].double(), d[s] if oracle else None), y[s], d[s], multi).backward()
        out.append({n: p.grad for n, p in m.named_parameters()})
    return out


def check(variant, baseline, n_seeds: int, steps: int, atol: float, rtol: float, lr: float) -> dict:
    """Differences of ``variant`` from ``baseline`` (both fresh, the same initial weights), the noise-driven
    state (:func:`noise_driven`) left out: the first step's per-seed losses (``loss_first``, absolute) and
    gradients (``grad_first_rel``: each tensor's max difference over its largest value), both formulations'
    gradient errors against float64 (``err64_a``, ``err64``), then after ``steps`` Adam steps the losses
    (``loss_after``), weights (``weight_after_abs``, also in units of lr) and running statistics
    (``stats_after_rel``). ``ok``: first-step losses within ``atol`` and gradients within ``rtol``, and after
    the steps losses within ``10 atol``, weights within one Adam step (lr), running statistics within ``10 rtol``."""
    x, y, d = seed_batches(n_seeds)
    ref = float64_grads(baseline.models, x, y, d)
    la, lb = baseline.losses(x, y, d), variant.losses(x, y, d)
    la.sum().backward()
    if not getattr(variant, "use_grad", False):
        lb.sum().backward()
    noisy = noise_driven(baseline.cfg, [baseline.grads(s) for s in range(n_seeds)])
    res = {"loss_first": float((la.detach() - lb.detach()).abs().max()), "grad_first_rel": 0.0,
           "err64_a": 0.0, "err64": 0.0}
    for s in range(n_seeds):
        ga, gb = baseline.grads(s), variant.grads(s)
        for name, g in ga.items():
            if name in noisy:
                continue
            other = gb[name].reshape(g.shape)
            res["grad_first_rel"] = max(res["grad_first_rel"], _max_rel(other, g))
            res["err64_a"] = max(res["err64_a"], float((g.double() - ref[s][name]).abs().max() / ref[s][name].abs().max()))
            res["err64"] = max(res["err64"], float((other.double() - ref[s][name]).abs().max() / ref[s][name].abs().max()))
    for m in baseline.models:
        m.zero_grad(set_to_none=True)
    # the check's forward passes updated the running statistics of both alike (one forward each)
    for it in range(steps):
        xb, yb, db = seed_batches(n_seeds, it + 1)
        baseline.step(xb, yb, db)
        variant.step(xb, yb, db)
    x, y, d = seed_batches(n_seeds, steps + 1)
    with torch.no_grad():
        la, lb = baseline.losses(x, y, d), variant.losses(x, y, d)
    res["loss_after"] = float((la - lb).abs().max())
    res["weight_after_abs"], res["stats_after_rel"], res["noise_driven_abs"] = 0.0, 0.0, 0.0
    for s in range(n_seeds):
        sa, sb = baseline.state(s), variant.state(s)
        for name, t in sa.items():
            if name.endswith("num_batches_tracked"):
                continue
            other = sb[name].detach().reshape(t.shape)
            if name in noisy:
                res["noise_driven_abs"] = max(res["noise_driven_abs"], float((other - t.detach()).abs().max()))
            elif name.endswith(("running_mean", "running_var")):
                res["stats_after_rel"] = max(res["stats_after_rel"], _max_rel(other, t))
            else:
                res["weight_after_abs"] = max(res["weight_after_abs"], float((other - t.detach()).abs().max()))
    res["weight_after_in_lr"] = res["weight_after_abs"] / lr
    res["noise_driven"] = sorted(noisy)
    res["ok"] = not (res["loss_first"] > atol or res["err64"] > max(rtol, 3 * res["err64_a"])
                     or res["loss_after"] > 10 * atol or res["weight_after_in_lr"] > 1)
    return res


VARIANTS = ("a", "b_autograd", "b_grad", "c", "c_head")


def build(variant: str, cfg, n_seeds: int, lr: float):
    models = seed_models(cfg, n_seeds)
    if variant == "a":
        return Sequential(models, lr)
    if variant == "b_autograd":
        return FuncVmap(models, lr, use_grad=False)
    if variant == "b_grad":
        return FuncVmap(models, lr, use_grad=True)
    return Grouped(models, lr, gemm_head=variant == "c_head")


def bench_case(topology: str, strategy: str, args) -> list[dict]:
    cfg = model_config(topology, strategy, args.fidelity)
    rows = []
    for n in args.seeds:
        checks = {}
        for variant in VARIANTS[1:]:
            checks[variant] = check(build(variant, cfg, n, args.lr), build("a", cfg, n, args.lr), n,
                                    args.check_steps, args.atol, args.rtol, args.lr)
        runners = {v: build(v, cfg, n, args.lr) for v in VARIANTS}
        x, y, d = seed_batches(n)
        times = interleaved({v: (lambda r=r: r.step(x, y, d)) for v, r in runners.items()}, args.repeats, args.warmup)
        base = sorted(times["a"])[len(times["a"]) // 2]
        row = {"topology": topology, "strategy": strategy, "seeds": n}
        line = f"{topology:<11}{strategy:<16}S={n}"
        for v in VARIANTS:
            mn, md = stats_ms(times[v], per=n)
            med = sorted(times[v])[len(times[v]) // 2]
            row[v] = {"ms_per_seed": [mn, md], "vs_a": med / base, **checks.get(v, {})}
            line += f"  {v} {mn:6.2f} /{md:6.2f}" + (f" (x{med / base:.2f})" if v != "a" else "")
        rows.append(row)
        print(line, flush=True)
        for v, c in checks.items():
            print(f"    check {v:<11}{'ok' if c['ok'] else 'OUTSIDE TOLERANCE'}: first step: losses {c['loss_first']:.1e}, "
                  f"gradients {c['grad_first_rel']:.1e} (float64 error {c['err64']:.1e}, a's {c['err64_a']:.1e}); after "
                  f"{args.check_steps} steps: losses {c['loss_after']:.1e}, weights {c['weight_after_abs']:.1e} "
                  f"({c['weight_after_in_lr']:.2f} lr), running stats {c['stats_after_rel']:.1e}"
                  + (f"; noise-driven {', '.join(c['noise_driven'])}: {c['noise_driven_abs']:.1e}" if c["noise_driven"] else ""),
                  flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--topologies", default=",".join(TOPOLOGIES))
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--seeds", default="1,2,3,5", help="comma-separated numbers of seeds trained together")
    p.add_argument("--fidelity", default="paper")
    p.add_argument("--lr", type=float, default=0.003, help="the default preset's")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--check-steps", type=int, default=5)
    p.add_argument("--atol", type=float, default=1e-5, help="on losses")
    p.add_argument("--rtol", type=float, default=1e-4, help="on gradients, weights and running statistics, "
                                                            "relative to each tensor's largest value")
    p.add_argument("--quick", action="store_true", help="S = 1, 3; 3 repeats, 1 warm-up")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.repeats, args.warmup = "1,3", 3, 1
    args.seeds = [int(s) for s in args.seeds.split(",")]
    setup(1)
    mm = matmul_figures()
    print(machine_line(mm), flush=True)
    print(f"\nms per seed and step (min / median), x: median / a's median; fidelity {args.fidelity}; tolerance: "
          f"first-step losses {args.atol:g}, gradients' error against float64 at most max({args.rtol:g}, 3 x a's); after "
          f"{args.check_steps} steps losses {10 * args.atol:g}, weights one lr", flush=True)
    rows = []
    for topology in args.topologies.split(","):
        for strategy in args.strategies.split(","):
            rows.extend(bench_case(topology, strategy, args))
    print("\nsummary (worst case over the rows): first-step gradient difference from a, relative; error against float64"
          " (a's in brackets); weights after the steps, in lr; cases outside tolerance")
    for v in VARIANTS[1:]:
        print(f"  {v:<11}{max(r[v]['grad_first_rel'] for r in rows):.1e}  {max(r[v]['err64'] for r in rows):.1e} "
              f"({max(r[v]['err64_a'] for r in rows):.1e})  {max(r[v]['weight_after_in_lr'] for r in rows):.2f}  "
              f"{sum(not r[v]['ok'] for r in rows)} of {len(rows)}")
    end = matmul_figures()
    print(f"\n{machine_line(end)} (again, at the end)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"matmul_gflops_1thread": [mm, end], "torch": torch.__version__, "args": vars(args),
                       "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
