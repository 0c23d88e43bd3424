"""Issue 17 §1: what Eq. 2's lambda does (and does not do) to multi-task CAA-Net, proved on tiny models.

With the paper's argmax conditioning the scene loss and the device loss update disjoint parameters,
so a constant lambda changes nothing the scene branch learns, Adam makes it (nearly) irrelevant to
CNN-d too, and the switch to lambda_low acts only through Adam's moments. The posterior conditioning
(beyond the paper) shares CNN-d between both losses, so lambda changes the trained model. These are
the tests ``caanet.fidelity.FINDINGS`` cites.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import caanet.training as training
from caanet.fidelity import FINDINGS
from caanet.models import ModelConfig, build_model
from caanet.models.loss_weighting import UncertaintyWeighting
from caanet.optim import Adam
from caanet.spec import CellSpec
from caanet.training import TrainConfig, train_cell

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(iterations=20, batch_size=8, channels=(4, 8, 8, 16), device_channels=(4, 8), lr_decay_every=10,
            lambda_check_every=10, checkpoint_every=10, log_every=5, val_fraction=0.2, eval_batch_size=16)
ARGMAX = ("multi_task", "multi_task_learned")
POSTERIOR = ("multi_task_posterior", "multi_task_learned_posterior")
SCENE_PARTS = ("backbone.", "head.", "conditioning.")


def spec(cell_id: str, **kw) -> CellSpec:
    return CellSpec.from_id(cell_id, dataset="tiny", **kw)


def trained(tiny_cache, tmp_path, cell_id: str, name: str, **cfg) -> dict:
    """The state dict of ``cell_id`` trained on the tiny cache with TINY overridden by ``cfg``."""
    out = tmp_path / name
    train_cell(tiny_cache, spec(cell_id), TrainConfig(**{**TINY, **cfg}), out)
    return torch.load(out / "model.pt", weights_only=True)["state_dict"]


def part(state: dict, prefixes) -> dict:
    return {k: v for k, v in state.items() if k.startswith(prefixes)}


def identical(a: dict, b: dict) -> bool:
    assert a.keys() == b.keys() and a
    return all(torch.equal(a[k], b[k]) for k in a)


def max_abs_difference(a: dict, b: dict) -> float:
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def model_of(strategy: str, seed: int = 0):
    torch.manual_seed(seed)
    s = CellSpec("tiny", "cnn_pool", "att", strategy, cond_layer=2)
    return build_model(ModelConfig.from_spec(s, n_classes=4, n_devices=3, channels=(4, 8, 8, 16),
                                             device_channels=(4, 8), input_shape=(64, 32)))


def cross_gradients(strategy: str) -> tuple[dict, dict]:
    """``(grads of L_scene on CNN-d, grads of L_device on the scene network)``, name -> tensor or None."""
    model = model_of(strategy).train()
    x, y, d = torch.randn(6, 64, 32), torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([0, 1, 2, 0, 1, 2])
    out = model(x)
    F.nll_loss(out.scene, y).backward(retain_graph=True)
    scene_on_cnn_d = {n: p.grad for n, p in model.named_parameters() if n.startswith("device_net.")}
    model.zero_grad(set_to_none=True)
    F.nll_loss(out.device, d).backward()
    device_on_scene = {n: p.grad for n, p in model.named_parameters() if n.startswith(SCENE_PARTS)}
    assert scene_on_cnn_d and device_on_scene
    assert {n.split(".")[0] for n in device_on_scene} == {"backbone", "head", "conditioning"}
    return scene_on_cnn_d, device_on_scene


def zero(g) -> bool:
    return g is None or not torch.any(g)


# ---------------------------------------------------------------- the argmax finding


@pytest.mark.parametrize("strategy", ARGMAX)
def test_argmax_losses_share_no_parameter(strategy):
    """No gradient of L_scene on any CNN-d tensor, none of L_device on the scene network (backbone, head,
    Eq. 1's conditioning): the argmax is a constant to autograd."""
    scene_on_cnn_d, device_on_scene = cross_gradients(strategy)
    assert all(zero(g) for g in scene_on_cnn_d.values())
    assert all(zero(g) for g in device_on_scene.values())


@pytest.mark.parametrize("strategy", POSTERIOR)
def test_posterior_scene_loss_reaches_every_cnn_d_tensor(strategy):
    """Beyond the paper: the posterior conditioning carries L_scene's gradient into every CNN-d tensor
    (L_device still reaches only CNN-d)."""
    scene_on_cnn_d, device_on_scene = cross_gradients(strategy)
    assert all(not zero(g) for g in scene_on_cnn_d.values()), [n for n, g in scene_on_cnn_d.items() if zero(g)]
    assert all(zero(g) for g in device_on_scene.values())


def test_argmax_scene_branch_is_bit_identical_for_two_constant_lambdas(tiny_cache, tmp_path):
    """Trained with lambda = 1 and lambda = 0.3 throughout, the scene branch (backbone, head,
    conditioning) of an argmax multi-task cell is bit-identical; CNN-d differs by Adam's eps only."""
    runs = {lam: trained(tiny_cache, tmp_path, "cnn_pool-max-multi_task-L2", f"lam{lam}", lambda_high=lam,
                         lambda_low=lam) for lam in (1.0, 0.3)}
    assert identical(part(runs[1.0], SCENE_PARTS), part(runs[0.3], SCENE_PARTS))
    assert max_abs_difference(part(runs[1.0], "device_net."), part(runs[0.3], "device_net.")) < 1e-5


def test_adam_makes_a_constant_lambda_irrelevant_to_cnn_d_too(tiny_cache, tmp_path):
    """Adam's update is invariant to a constant scale of the gradient except through eps: with eps -> 0
    and lambda a power of two (so scaling is exact in floating point) the whole model, CNN-d
    included, is bit-identical for lambda = 1 and lambda = 1/8."""
    runs = {lam: trained(tiny_cache, tmp_path, "cnn_pool-max-multi_task-L2", f"lam{lam}", lambda_high=lam,
                         lambda_low=lam, eps=1e-30) for lam in (1.0, 0.125)}
    assert identical(runs[1.0], runs[0.125])


def _force_switch(monkeypatch):
    """CNN-d reaches the switch accuracy at the first check (iteration 10 of TINY)."""
    monkeypatch.setattr(training.trainer, "device_accuracy", lambda *a, **kw: 0.99)


def test_the_switch_acts_on_cnn_d_only_through_adams_moments(tiny_cache, tmp_path, monkeypatch):
    """With Adam's moments off (beta1 = beta2 = 0, eps -> 0) a run whose lambda switches from 1 to
    2**-13 after iteration 10 ends bit-identical to a run whose lambda stays 1; with the paper's betas
    the same switch changes CNN-d."""
    _force_switch(monkeypatch)
    cell = "cnn_pool-max-multi_task-L2"
    no_moments = dict(betas=(0.0, 0.0), eps=1e-30)
    switched = trained(tiny_cache, tmp_path, cell, "sw0", lambda_low=2.0**-13, **no_moments)
    constant = trained(tiny_cache, tmp_path, cell, "const0", lambda_low=1.0, **no_moments)
    assert identical(switched, constant)
    switched = trained(tiny_cache, tmp_path, cell, "sw", lambda_low=2.0**-13, eps=1e-30)
    constant = trained(tiny_cache, tmp_path, cell, "const", lambda_low=1.0, eps=1e-30)
    assert not identical(part(switched, "device_net."), part(constant, "device_net."))


def relative_updates(beta2: float, lam: float, before: int, after: int) -> np.ndarray:
    """Size of caanet's Adam update, relative to ``lr``, for ``after`` steps of a gradient scaled by
    ``lam`` that follow ``before`` steps at scale 1 (a stationary gradient: a fixed random sign per
    element); the parameter is reset before each step so the update is read exactly."""
    torch.manual_seed(0)
    p = torch.zeros(32, requires_grad=True)
    opt = Adam([p], lr=1e-3, betas=(0.9, beta2), eps=1e-8)
    sign = torch.randn(32).sign()
    sizes = []
    for t in range(before + after):
        with torch.no_grad():
            p.zero_()
        p.grad = sign * (1.0 if t < before else lam)
        opt.step()
        if t >= before:
            sizes.append(float(p.detach().abs().mean()) / 1e-3)
    return np.array(sizes)


def test_after_the_switch_adam_freezes_cnn_d_for_ln_3lambda2_over_ln_beta2_iterations():
    """After lambda drops to ``lam``, the update shrinks to about lam / sqrt(beta2**j + lam**2) of its size
    and regains half of it after j = ln(3 lam**2) / ln(beta2) iterations: the lag of Adam's second
    moment. Checked with caanet's Adam at beta2 = 0.99, lam = 1e-2 (j_half = 807; at the paper's
    beta2 = 0.999 and lambda_low = 1e-4 the same formula gives 17,313 iterations)."""
    beta2, lam = 0.99, 1e-2
    j_half = math.log(3 * lam**2) / math.log(beta2)
    sizes = relative_updates(beta2, lam, before=1000, after=3000)
    j = np.arange(1, sizes.size + 1)
    expected = lam / np.sqrt(beta2**j + lam**2)
    settled = j >= 150  # after the first moment (beta1 = 0.9: 0.9**150 ~ 1e-7) has forgotten the old gradient
    np.testing.assert_allclose(sizes[settled], expected[settled], rtol=0.02)
    assert sizes[100] < 0.03 and 0.45 < sizes[round(j_half) - 1] < 0.55 and sizes[-1] > 0.99
    assert round(math.log(3 * 1e-4**2) / math.log(0.999)) == 17313


def test_the_learned_lambda_scales_the_argmax_scene_gradient_and_nothing_else():
    """Under Kendall et al.'s weighting the argmax scene branch's gradient is exp(-s_scene) times the
    gradient of L_scene alone: lambda_eff = exp(s_scene - s_device) never enters it."""
    grads = {}
    for weighted in (False, True):
        model = model_of("multi_task_learned").train()
        weighting = UncertaintyWeighting()
        with torch.no_grad():
            weighting.log_var.copy_(torch.tensor([0.7, -1.3]))
        torch.manual_seed(1)
        x, y, d = torch.randn(6, 64, 32), torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([0, 1, 2, 0, 1, 2])
        out = model(x)
        ls, ld = F.nll_loss(out.scene, y), F.nll_loss(out.device, d)
        (weighting(ls, ld) if weighted else ls).backward()
        grads[weighted] = {n: p.grad.clone() for n, p in model.named_parameters() if n.startswith(SCENE_PARTS)
                           and p.grad is not None}
    assert grads[True].keys() == grads[False].keys()
    # equal up to float32 rounding (the weighted graph sums in another order; some gradients, such as the
    # conditioning's bias ahead of BatchNorm, are zero up to rounding)
    scale = max(float(g.abs().max()) for g in grads[False].values())
    for name in grads[True]:
        torch.testing.assert_close(grads[True][name], math.exp(-0.7) * grads[False][name], rtol=1e-4,
                                   atol=1e-6 * scale)


@pytest.mark.parametrize("strategy", ARGMAX)
def test_every_argmax_multi_task_cell_of_a_seed_trains_the_same_cnn_d(tiny_cache, tmp_path, strategy):
    """Two argmax multi-task cells of different topology, pooling and conditioning layer and the same seed
    end with bit-identical CNN-d weights (and the same switch): CNN-d starts from its own seeded stream
    and no scene gradient reaches it. Another seed gives another CNN-d."""
    a = trained(tiny_cache, tmp_path, f"cnn_pool-max-{strategy}-L1", "a")
    b = trained(tiny_cache, tmp_path, f"atrous-att-{strategy}-L3", "b")
    assert identical(part(a, "device_net."), part(b, "device_net."))
    other_seed = tmp_path / "c"
    train_cell(tiny_cache, spec(f"atrous-att-{strategy}-L3", seed=1), TrainConfig(**TINY), other_seed)
    c = torch.load(other_seed / "model.pt", weights_only=True)["state_dict"]
    assert not identical(part(a, "device_net."), part(c, "device_net."))


# ---------------------------------------------------------------- the posterior conditioning (beyond the paper)


@pytest.mark.parametrize("strategy", POSTERIOR)
def test_posterior_cells_train_their_own_cnn_d(tiny_cache, tmp_path, strategy):
    a = trained(tiny_cache, tmp_path, f"cnn_pool-max-{strategy}-L1", "a")
    b = trained(tiny_cache, tmp_path, f"atrous-att-{strategy}-L3", "b")
    assert not identical(part(a, "device_net."), part(b, "device_net."))


def test_posterior_lambda_changes_the_trained_scene_network(tiny_cache, tmp_path):
    """With the posterior conditioning two constant lambdas give different scene weights (the argmax
    counterpart: test_argmax_scene_branch_is_bit_identical_for_two_constant_lambdas)."""
    runs = {lam: trained(tiny_cache, tmp_path, "cnn_pool-max-multi_task_posterior-L2", f"lam{lam}", lambda_high=lam,
                         lambda_low=lam) for lam in (1.0, 0.3)}
    assert max_abs_difference(part(runs[1.0], SCENE_PARTS), part(runs[0.3], SCENE_PARTS)) > 1e-3


# ---------------------------------------------------------------- the findings as data


def test_every_finding_names_tests_that_exist():
    import importlib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    assert FINDINGS and len({f.name for f in FINDINGS}) == len(FINDINGS)
    for finding in FINDINGS:
        assert finding.title and finding.text and finding.tests, finding.name
        for ref in finding.tests:
            path, _, name = ref.partition("::")
            assert (root / path).is_file(), ref
            module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
            assert callable(getattr(module, name, None)), ref
