"""The layout, order and batching of the default preset's convolutions, and the attention head's formulation.

Usage::

    python3 benchmarks/bench_conv_layout.py            # all parts, 30 interleaved repeats
    python3 benchmarks/bench_conv_layout.py --quick    # 5 repeats (a minute)
    python3 benchmarks/bench_conv_layout.py --parts head,step --repeats 50 --json out.json

The default preset's networks (channels 4-8-8-16, CNN-d 4-8, kernel 5, 31x64 inputs, batch 16) in
float32 on one thread; every time is this process's CPU time, variants interleaved, minimum and
median of ``--repeats`` (``benchutil``). Parts:

``convs``
    every convolution of the three topologies and of CNN-d at its own input size (``cnn_pool``'s and
    CNN-d's shrinking maps, ``atrous``'s dilations 1, 2, 4, 8): forward, and forward + backward
    (input gradient too, except for the first conv whose input needs none), in channels-last (NHWC,
    what ``caanet.models`` uses) and contiguous NCHW, with GFLOP/s (FLOPs counted by torch's
    ``FlopCounterMode``, as ``caanet.cost`` counts them).
``bn``
    each block's BatchNorm (training mode) + ReLU (+ 2x2 max pool in pooled blocks), forward +
    backward, in both layouts.
``batching``
    a multi-task cell's first scene block and CNN-d's first block read the same input: the two
    conv(1->4)+BN+ReLU blocks against one conv(1->8)+BN(8)+ReLU split in two (the same maths:
    BatchNorm is per channel). Valid where the conditioning is not at layer 1.
``head``
    the attention head (two 1x1 convs 16->10 and Eq. 5-6, ``caanet.models.heads.AttentionHead``) in
    several formulations, each checked against today's head for both fidelities (``paper``,
    ``reference``): scene and attention within ``--atol`` and every gradient (input, weights, biases)
    within ``--rtol`` of its largest value; forward + backward of ``nll_loss`` on the 31x64 map (no-pool
    and atrous) and the 1x4 map (pooled CNN).
``step``
    the whole training step (forward, backward, fused ``caanet.optim.Adam``) of every topology x
    strategy: today's model, the same with the fastest head formulation, and the model in NCHW.
"""

from __future__ import annotations

import argparse
import json
import statistics
import types

import torch
import torch.nn.functional as F

from benchutil import (BATCH, CHANNELS, DEVICE_CHANNELS, INPUT_SHAPE, N_CLASSES, STRATEGIES, TOPOLOGIES, interleaved,
                       machine_line, matmul_figures, model_config, setup, stats_ms)

CL, NCHW = torch.channels_last, torch.contiguous_format
LAYOUTS = {"channels_last": CL, "nchw": NCHW}


# --------------------------------------------------------------------------------------------------
# The layers
# --------------------------------------------------------------------------------------------------


def conv_layers() -> list[dict]:
    """Every distinct conv of the default preset's networks: ``cin, cout, dilation, (H, W)`` and who uses it."""
    from caanet.models.backbones import get_topology

    layers: dict[tuple, dict] = {}

    def add(owner, cin, cout, dil, hw, pool):
        key = (cin, cout, dil, hw)
        layers.setdefault(key, {"cin": cin, "cout": cout, "dilation": dil, "hw": hw, "pool": pool, "used_by": []})
        layers[key]["used_by"].append(owner)

    for topology in TOPOLOGIES:
        topo = get_topology(topology)
        hw = INPUT_SHAPE
        for i, (cin, cout, dil) in enumerate(zip((1, *CHANNELS[:-1]), CHANNELS, topo.dilations), start=1):
            add(f"{topology}.{i}", cin, cout, dil, hw, topo.pool)
            if topo.pool:
                hw = (hw[0] // 2, hw[1] // 2)
    hw = INPUT_SHAPE
    for i, (cin, cout) in enumerate(zip((1, *DEVICE_CHANNELS[:-1]), DEVICE_CHANNELS), start=1):
        add(f"cnn_d.{i}", cin, cout, 1, hw, True)
        hw = (hw[0] // 2, hw[1] // 2)
    return list(layers.values())


def _flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def bench_convs(args) -> list[dict]:
    rows = []
    for layer in conv_layers():
        cin, cout, dil, (h, w) = layer["cin"], layer["cout"], layer["dilation"], layer["hw"]
        fns, fwd_fns, flops = {}, {}, {}
        for name, fmt in LAYOUTS.items():
            x = torch.randn(BATCH, cin, h, w).contiguous(memory_format=fmt).requires_grad_(cin > 1)
            wt = (torch.randn(cout, cin, 5, 5) * 0.1).contiguous(memory_format=fmt).requires_grad_()
            g = torch.randn(BATCH, cout, h, w).contiguous(memory_format=fmt)

            def fwd_bwd(x=x, wt=wt, g=g):
                F.conv2d(x, wt, padding=2 * dil, dilation=dil).backward(g)

            def fwd(x=x, wt=wt):
                with torch.no_grad():
                    F.conv2d(x, wt, padding=2 * dil, dilation=dil)

            fns[name], fwd_fns[name] = fwd_bwd, fwd
            flops[name] = (_flops(fwd_bwd), _flops(fwd))
        times = interleaved({**{f"{k} fb": f for k, f in fns.items()}, **{f"{k} f": f for k, f in fwd_fns.items()}},
                            args.repeats, args.warmup)
        row = {**layer, "hw": list(layer["hw"]), "mflop_fwd_bwd": flops["channels_last"][0] / 1e6,
               "mflop_fwd": flops["channels_last"][1] / 1e6}
        for name in LAYOUTS:
            for kind, idx in (("fb", 0), ("f", 1)):
                mn, md = stats_ms(times[f"{name} {kind}"])
                row[f"{name}_{kind}_ms"] = [mn, md]
                row[f"{name}_{kind}_gflops"] = flops[name][idx] / mn / 1e6
        rows.append(row)
    print("\n## convolutions, batch 16, kernel 5: ms (min / median) and GFLOP/s at the minimum; fb = forward + backward")
    print(f"{'conv':<22}{'map':>7}{'MFLOP fb':>9} | {'NHWC fwd':>15}{'NHWC fb':>15}{'GF/s':>6} | "
          f"{'NCHW fwd':>15}{'NCHW fb':>15}{'GF/s':>6} | used by")
    for r in rows:
        name = f"{r['cin']}->{r['cout']}" + (f" d{r['dilation']}" if r["dilation"] > 1 else "")
        cl, nc = "channels_last", "nchw"
        print(f"{name:<22}{r['hw'][0]:>3}x{r['hw'][1]:<3}{r['mflop_fwd_bwd']:>9.1f} | "
              f"{r[cl + '_f_ms'][0]:>6.2f} /{r[cl + '_f_ms'][1]:>6.2f}  {r[cl + '_fb_ms'][0]:>6.2f} /{r[cl + '_fb_ms'][1]:>6.2f}"
              f"{r[cl + '_fb_gflops']:>6.0f} | "
              f"{r[nc + '_f_ms'][0]:>6.2f} /{r[nc + '_f_ms'][1]:>6.2f}  {r[nc + '_fb_ms'][0]:>6.2f} /{r[nc + '_fb_ms'][1]:>6.2f}"
              f"{r[nc + '_fb_gflops']:>6.0f} | {', '.join(r['used_by'])}", flush=True)
    return rows


def bench_bn(args) -> list[dict]:
    """BatchNorm (training) + ReLU (+ pool) of each distinct block output, forward + backward."""
    from caanet.models.backbones import get_topology

    shapes: dict[tuple, list] = {}
    for topology in (*TOPOLOGIES, "cnn_d"):
        pool = topology == "cnn_d" or get_topology(topology).pool
        widths = DEVICE_CHANNELS if topology == "cnn_d" else CHANNELS
        hw = INPUT_SHAPE
        for i, c in enumerate(widths, start=1):
            shapes.setdefault((c, hw, pool), []).append(f"{topology}.{i}")
            if pool:
                hw = (hw[0] // 2, hw[1] // 2)
    rows = []
    for (c, (h, w), pool), used_by in shapes.items():
        fns = {}
        for name, fmt in LAYOUTS.items():
            x = torch.randn(BATCH, c, h, w).contiguous(memory_format=fmt).requires_grad_()
            gamma, beta = torch.ones(c, requires_grad=True), torch.zeros(c, requires_grad=True)
            rm, rv = torch.zeros(c), torch.ones(c)
            out_hw = (h // 2, w // 2) if pool else (h, w)
            g = torch.randn(BATCH, c, *out_hw).contiguous(memory_format=fmt)

            def fb(x=x, gamma=gamma, beta=beta, rm=rm, rv=rv, g=g, pool=pool):
                y = F.relu(F.batch_norm(x, rm, rv, gamma, beta, training=True))
                if pool:
                    y = F.max_pool2d(y, 2)
                y.backward(g)

            fns[name] = fb
        times = interleaved(fns, args.repeats, args.warmup)
        row = {"channels": c, "hw": [h, w], "pool": pool, "used_by": used_by,
               **{f"{n}_fb_ms": list(stats_ms(t)) for n, t in times.items()}}
        rows.append(row)
    print("\n## BatchNorm (training) + ReLU (+ 2x2 max pool), forward + backward: ms (min / median)")
    print(f"{'block output':<26}{'NHWC':>16}{'NCHW':>16} | used by")
    for r in rows:
        name = f"{r['channels']} x {r['hw'][0]}x{r['hw'][1]}" + (" + pool" if r["pool"] else "")
        print(f"{name:<26}{r['channels_last_fb_ms'][0]:>7.2f} /{r['channels_last_fb_ms'][1]:>6.2f}"
              f"{r['nchw_fb_ms'][0]:>8.2f} /{r['nchw_fb_ms'][1]:>6.2f} | {', '.join(r['used_by'])}", flush=True)
    return rows


def bench_batching(args) -> dict:
    """Scene block 1 and CNN-d block 1 (both conv 1->4 + BN + ReLU of the same input) as two blocks or one 1->8."""
    c = CHANNELS[0]
    assert DEVICE_CHANNELS[0] == c
    x = torch.randn(BATCH, 1, *INPUT_SHAPE).contiguous(memory_format=CL)
    w1, w2 = ((torch.randn(c, 1, 5, 5) * 0.3).contiguous(memory_format=CL).requires_grad_() for _ in range(2))
    gammas = [torch.ones(c, requires_grad=True) for _ in range(2)]
    betas = [torch.zeros(c, requires_grad=True) for _ in range(2)]
    g1, g2 = (torch.randn(BATCH, c, *INPUT_SHAPE).contiguous(memory_format=CL) for _ in range(2))

    def two():
        outs = [F.relu(F.batch_norm(F.conv2d(x, w, padding=2), torch.zeros(c), torch.ones(c), ga, be, training=True))
                for w, ga, be in zip((w1, w2), gammas, betas)]
        torch.autograd.backward(outs, [g1, g2])
        return outs

    def merged():
        y = F.relu(F.batch_norm(F.conv2d(x, torch.cat([w1, w2]), padding=2), torch.zeros(2 * c), torch.ones(2 * c),
                                torch.cat(gammas), torch.cat(betas), training=True))
        outs = [y[:, :c], y[:, c:]]
        torch.autograd.backward(outs, [g1, g2])
        return outs

    a, b = two(), merged()
    diff = max(float((u - v).detach().abs().max()) for u, v in zip(a, b))
    times = interleaved({"two blocks": two, "one merged block": merged}, args.repeats, args.warmup)
    res = {name: list(stats_ms(t)) for name, t in times.items()}
    res["max_abs_diff"] = diff
    print("\n## batching: multi-task block 1 of the scene network and of CNN-d (conv 1->4 + BN + ReLU each, same input), "
          "forward + backward, ms (min / median)")
    for name in ("two blocks", "one merged block"):
        print(f"{name:<20}{res[name][0]:>7.2f} /{res[name][1]:>6.2f}")
    print(f"outputs differ by at most {diff:.2e}")
    return res


# --------------------------------------------------------------------------------------------------
# The attention head
# --------------------------------------------------------------------------------------------------


def _weights(fid, att: torch.Tensor) -> torch.Tensor:
    if fid.attention_weight == "sigmoid":
        return torch.sigmoid(att)
    return torch.clamp(torch.sigmoid(att) + 0.1, 0.1, 0.9)


def _pool(cla, att, fid, class_dim: int, pos_dim: int):
    """Eq. 5-6 (``caanet.models.heads.attention_pooling``, the same order of operations) on maps with classes on
    ``class_dim`` and the positions flattened on ``pos_dim``; returns ``(scene, normalised attention)``."""
    from caanet.models.heads import ATT_NORM_EPS, PAPER_LOG_EPS

    a = _weights(fid, att)
    total = a.sum(dim=pos_dim, keepdim=True).clamp_min(ATT_NORM_EPS)
    c = torch.softmax(cla, dim=class_dim) if fid.attention_class_act == "softmax" else torch.log_softmax(cla, dim=class_dim)
    norm = a / total
    s = (norm * c).sum(dim=pos_dim)
    if fid.attention_class_act == "softmax":
        s = torch.log(s.clamp_min(PAPER_LOG_EPS))
    return s, norm


def head_today(head, x):
    return head(x)


def head_nchw(head, x):
    """Today's maths on an NCHW copy of the map (softmax over dim 1 is then strided, not innermost)."""
    from caanet.models.heads import attention_pooling

    x = x.contiguous()
    return attention_pooling(F.conv2d(x, head.cla.weight, head.cla.bias), F.conv2d(x, head.att.weight, head.att.bias),
                             head.fidelity)


def head_one_conv(head, x):
    """One 1x1 conv C -> 2K, sliced."""
    from caanet.models.heads import attention_pooling

    z = F.conv2d(x, torch.cat([head.cla.weight, head.att.weight]), torch.cat([head.cla.bias, head.att.bias]))
    k = head.cla.out_channels
    return attention_pooling(z[:, :k], z[:, k:], head.fidelity)


def _bcp(x):
    """``(B, C, P, Q)`` -> ``(B, C, P*Q)`` (a copy for a channels-last map)."""
    return x.flatten(2)


def head_bmm_one(head, x):
    """The lead's: one batched matmul ``(2K, C) @ (B, C, PQ)`` -> ``(B, 2K, PQ)``, sliced."""
    b, _, p, q = x.shape
    k = head.cla.out_channels
    w = torch.cat([head.cla.weight.flatten(1), head.att.weight.flatten(1)])
    z = torch.matmul(w, _bcp(x)) + torch.cat([head.cla.bias, head.att.bias])[:, None]
    with torch.autocast(device_type=x.device.type, enabled=False):
        s, norm = _pool(z[:, :k].float(), z[:, k:].float(), head.fidelity, 1, 2)
    return s, norm.view(b, k, p, q)


def head_bmm_two(head, x):
    """Two batched matmuls ``(K, C) @ (B, C, PQ)`` -> ``(B, K, PQ)``."""
    b, _, p, q = x.shape
    k = head.cla.out_channels
    xb = _bcp(x)
    cla = torch.matmul(head.cla.weight.flatten(1), xb) + head.cla.bias[:, None]
    att = torch.matmul(head.att.weight.flatten(1), xb) + head.att.bias[:, None]
    with torch.autocast(device_type=x.device.type, enabled=False):
        s, norm = _pool(cla.float(), att.float(), head.fidelity, 1, 2)
    return s, norm.view(b, k, p, q)


def _positions_by_channel(x):
    """``(B, C, P, Q)`` -> ``(C, B*P*Q)``: a view of a channels-last map (a copy otherwise)."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).t()


def head_gemm_one(head, x):
    """One GEMM over every clip: ``(2K, C) @ (C, B*PQ)`` -> ``(2K, B, PQ)``, sliced."""
    b, _, p, q = x.shape
    k = head.cla.out_channels
    w = torch.cat([head.cla.weight.flatten(1), head.att.weight.flatten(1)])
    z = torch.addmm(torch.cat([head.cla.bias, head.att.bias])[:, None], w, _positions_by_channel(x)).view(2 * k, b, p * q)
    with torch.autocast(device_type=x.device.type, enabled=False):
        s, norm = _pool(z[:k].float(), z[k:].float(), head.fidelity, 0, 2)
    return s.t(), norm.view(k, b, p, q).transpose(0, 1)


def head_gemm_two(head, x):
    """Two GEMMs over every clip: ``(K, C) @ (C, B*PQ)`` -> ``(K, B, PQ)`` each."""
    b, _, p, q = x.shape
    k = head.cla.out_channels
    xt = _positions_by_channel(x)
    cla = torch.addmm(head.cla.bias[:, None], head.cla.weight.flatten(1), xt).view(k, b, p * q)
    att = torch.addmm(head.att.bias[:, None], head.att.weight.flatten(1), xt).view(k, b, p * q)
    with torch.autocast(device_type=x.device.type, enabled=False):
        s, norm = _pool(cla.float(), att.float(), head.fidelity, 0, 2)
    return s.t(), norm.view(k, b, p, q).transpose(0, 1)


# ---- the fastest formulation: the two GEMMs with Eq. 5 folded into Eq. 6, the pooling that
# caanet/models/heads.py adopted (attention_pooling_classes_first; PointwiseConv2d gives the GEMMs)
from caanet.models.heads import attention_pooling_classes_first  # noqa: E402


def head_gemm_two_ratio(self, x):
    """``AttentionHead.forward``: two GEMMs over every clip's positions, ``(K, C) @ (C, B*P*Q)``, classes first."""
    x = self.pre(x)
    b, c, p, q = x.shape
    k = self.cla.out_channels
    xt = x.permute(0, 2, 3, 1).reshape(b * p * q, c).t()  # (C, B*P*Q): a view of a channels-last map
    cla = torch.addmm(self.cla.bias[:, None], self.cla.weight.view(k, c), xt).view(k, b, p * q)
    att = torch.addmm(self.att.bias[:, None], self.att.weight.view(k, c), xt).view(k, b, p * q)
    scene, norm = attention_pooling_classes_first(cla, att, self.fidelity)
    return scene.t(), norm.view(k, b, p, q).transpose(0, 1)


HEADS = {
    "today (two 1x1 convs, channels-last)": head_today,
    "two 1x1 convs on an NCHW copy": head_nchw,
    "one 1x1 conv C->2K, sliced": head_one_conv,
    "bmm (B,2K,PQ), sliced": head_bmm_one,
    "two bmm (B,K,PQ)": head_bmm_two,
    "one GEMM (2K,B,PQ), sliced": head_gemm_one,
    "two GEMMs (K,B,PQ)": head_gemm_two,
    "two GEMMs (K,B,PQ), sum(a*c)/sum(a)": head_gemm_two_ratio,
}


def check_head(fn, head, x, y, atol: float, rtol: float) -> dict:
    """Max differences of ``fn``'s scene, attention and gradients from today's head; raises if beyond tolerance."""
    params = [x, head.cla.weight, head.cla.bias, head.att.weight, head.att.bias]
    s0, a0 = head(x)
    g0 = torch.autograd.grad(F.nll_loss(s0, y), params)
    s1, a1 = fn(head, x)
    g1 = torch.autograd.grad(F.nll_loss(s1, y), params)
    s0, a0, s1, a1 = s0.detach(), a0.detach(), s1.detach(), a1.detach()
    res = {"scene": float((s1 - s0).abs().max()), "attention": float((a1 - a0).abs().max()),
           "grad_rel": max(float((u - v).abs().max() / v.abs().max().clamp_min(1e-30)) for u, v in zip(g1, g0))}
    if tuple(a1.shape) != tuple(a0.shape) or res["scene"] > atol or res["attention"] > atol or res["grad_rel"] > rtol:
        raise AssertionError(f"{fn.__name__} differs from today's head: {res} (shape {tuple(a1.shape)})")
    return res


def bench_head(args) -> list[dict]:
    from caanet.fidelity import PAPER, REFERENCE
    from caanet.models.heads import AttentionHead

    rows = []
    print("\n## attention head (1x1 convs 16->10 and Eq. 5-6), forward + backward of nll_loss, ms (min / median);"
          f" equal to today's within atol {args.atol:g} (scene, attention) and rtol {args.rtol:g} (gradients)")
    for hw in ((31, 64), (1, 4)):
        for fid in (PAPER, REFERENCE):
            torch.manual_seed(0)
            head = AttentionHead(CHANNELS[-1], N_CLASSES, fid).to(memory_format=CL)
            with torch.no_grad():  # a trained head: non-zero attention weights also for `reference`
                head.att.weight.normal_(0, 0.3)
                head.att.bias.normal_(0, 0.1)
                head.cla.bias.normal_(0, 0.1)
            x = torch.relu(torch.randn(BATCH, CHANNELS[-1], *hw)).contiguous(memory_format=CL).requires_grad_()
            y = torch.randint(0, N_CLASSES, (BATCH,))
            checks = {name: check_head(fn, head, x, y, args.atol, args.rtol) for name, fn in HEADS.items()}

            def run(fn):
                def f():
                    F.nll_loss(fn(head, x)[0], y).backward()
                return f

            times = interleaved({name: run(fn) for name, fn in HEADS.items()}, args.repeats, args.warmup)
            base = statistics.median(times[next(iter(HEADS))])
            print(f"map {hw[0]}x{hw[1]}, fidelity {fid.name}:")
            for name, t in times.items():
                mn, md = stats_ms(t)
                rows.append({"map": list(hw), "fidelity": fid.name, "head": name, "ms": [mn, md],
                             "vs_today": statistics.median(t) / base, **checks[name]})
                print(f"  {name:<40}{mn:>7.3f} /{md:>7.3f}  x{statistics.median(t) / base:.2f}   "
                      f"max diff scene {checks[name]['scene']:.1e}, attention {checks[name]['attention']:.1e}, "
                      f"gradients {checks[name]['grad_rel']:.1e} (relative)", flush=True)
    return rows


def fastest_head(rows) -> str:
    """The formulation with the lowest mean over the (map, fidelity) cases of its median / today's median."""
    by = {}
    for r in rows:
        by.setdefault(r["head"], []).append(r["vs_today"])
    return min(by, key=lambda k: statistics.mean(by[k]))


# --------------------------------------------------------------------------------------------------
# The whole step
# --------------------------------------------------------------------------------------------------


def _nchw(model):
    """The model in NCHW: parameters contiguous and the input not made channels-last."""
    model.to(memory_format=NCHW)

    def check(self, x):
        return x.unsqueeze(1).contiguous()

    model._check_input = types.MethodType(check, model)
    return model


def _block1_nchw(model):
    """Block 1 of the backbone (and of CNN-d) normalised in NCHW: the conv's 4-channel output copied to
    NCHW for BatchNorm + ReLU (+ pool), then back to channels-last for block 2 (BatchNorm over 4 innermost
    channels is the slow case of the ``bn`` part)."""
    def forward(self, x, cond=None):
        y = self.conv(x).contiguous()
        if cond is not None:
            y = y + cond.to(y.dtype)[:, :, None, None]
        y = F.relu(self.bn(y))
        if self.pool:
            y = F.max_pool2d(y, kernel_size=2)
        return y.contiguous(memory_format=CL)

    blocks = [model.backbone.blocks[0]] + ([model.device_net.blocks[0]] if model.device_net is not None else [])
    for block in blocks:
        block.forward = types.MethodType(forward, block)
    return model


STEP_VARIANTS = ("today", "head", "block1_nchw", "nchw")


def bench_step(args, head_name: str) -> list[dict]:
    from caanet.models import build_model
    from caanet.optim import Adam

    rows = []
    head_fn = HEADS[head_name]
    print(f"\n## whole training step (forward, backward, fused Adam), fidelity {args.fidelity}, ms (min / median): "
          f"today; with the head '{head_name}' (head); with block 1's BatchNorm in NCHW (block1_nchw); "
          "the whole model in NCHW (nchw); x: median / today's median")
    for topology in TOPOLOGIES:
        for strategy in STRATEGIES:
            cfg = model_config(topology, strategy, args.fidelity)
            torch.manual_seed(0)
            x = torch.randn(BATCH, *INPUT_SHAPE)
            y, d = torch.randint(0, N_CLASSES, (BATCH,)), torch.randint(0, 3, (BATCH,))
            steps = {}
            for variant in STEP_VARIANTS:
                torch.manual_seed(0)
                model = build_model(cfg).train()
                if variant == "head":
                    model.head.forward = types.MethodType(head_fn, model.head)
                elif variant == "nchw":
                    _nchw(model)
                elif variant == "block1_nchw":
                    _block1_nchw(model)
                opt = Adam(model.parameters(), lr=3e-3)

                def step(model=model, opt=opt):
                    out = model(x, d if cfg.device_source == "oracle" else None)
                    loss = F.nll_loss(out.scene, y)
                    if out.device is not None:
                        loss = loss + F.nll_loss(out.device, d)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    return loss

                steps[variant] = step
            times = interleaved(steps, args.repeats, args.warmup)
            row = {"topology": topology, "strategy": strategy, **{k: list(stats_ms(t)) for k, t in times.items()}}
            line = f"{topology:<11}{strategy:<16} today {row['today'][0]:6.2f} /{row['today'][1]:6.2f}"
            for variant in STEP_VARIANTS[1:]:
                row[f"{variant}_vs_today"] = row[variant][1] / row["today"][1]
                line += (f"   {variant} {row[variant][0]:6.2f} /{row[variant][1]:6.2f} "
                         f"(x{row[f'{variant}_vs_today']:.2f})")
            rows.append(row)
            print(line, flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="convs,bn,batching,head,step")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="5 repeats, 1 warm-up")
    p.add_argument("--fidelity", default="paper", help="fidelity of the whole-step part")
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 5, 1
    setup(1)
    mm = matmul_figures()
    print(machine_line(mm), flush=True)
    parts = args.parts.split(",")
    res = {"matmul_gflops_1thread": mm, "torch": torch.__version__, "repeats": args.repeats}
    if "convs" in parts:
        res["convs"] = bench_convs(args)
    if "bn" in parts:
        res["bn"] = bench_bn(args)
    if "batching" in parts:
        res["batching"] = bench_batching(args)
    head_name = next(iter(HEADS))
    if "head" in parts:
        res["head"] = bench_head(args)
        head_name = res["fastest_head"] = fastest_head(res["head"])
        print(f"fastest head formulation: {head_name}")
    if "step" in parts:
        if "head" not in parts:
            head_name = "two GEMMs (K,B,PQ)"
        res["step"] = bench_step(args, head_name)
    res["matmul_gflops_1thread_end"] = mm = matmul_figures()
    print(f"\n{machine_line(mm)} (again, at the end)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    main()
