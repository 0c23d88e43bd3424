"""Where the paper's text, the authors' published code and caanet's two modes differ: the full list.

caanet runs in one of two fidelity modes, chosen per preset (``presets.<name>.fidelity``, default
``paper``; not a ``training`` key) and carried by every cell's :class:`caanet.spec.CellSpec` (``fidelity``):

* ``paper``: what the article says (Sec. III-D Eq. 5-6, Sec. IV-B), except where a departure is
  marked *deliberate* below (it avoids using test labels during training).
* ``reference``: what the authors' code (EIHW/CAANet_DCASE_ASC) does, so that its checkpoints load
  and its numbers can be reproduced. See ``../shared/reference/README.md`` items 1-6.

Every model or training decision that depends on the mode reads one field of :class:`Fidelity`;
no other module tests the mode's name. For each item: the paper's text; the authors' code; what the
``paper`` and ``reference`` modes do.

attention_class_act (Eq. 6's C)
    text: softmax over classes per bin; output log(Y), Y = sum A' * C.
    code: log_softmax; the output is the attention-weighted sum of per-bin log-probabilities.
    paper mode: the text. reference mode: the code.
attention_weight (Eq. 5's A)
    text: sigmoid. code: clamp(sigmoid(z) + 0.1, 0.1, 0.9).
    paper mode: the text. reference mode: the code.
attention_init_zero
    text: silent (default initialisation). code: the attention 1x1 conv weights start at zero.
    paper mode: default init. reference mode: zero.
lr_decay (Sec. IV-B)
    text: lr x 0.9 every 200 iterations. code: never (its condition is always false).
    paper mode: decays. reference mode: constant.
lambda_source (Eq. 2's switch)
    text: lambda switches when the device accuracy on the **test** subset reaches 98 %.
    code: device accuracy on the test fold.
    paper mode: **deliberate departure**, a validation split of whole recording locations carved from
    the training data (leak-free: no test label decides the training). reference mode: the test fold.
    ``training.lambda_on: test`` chooses the literal text in either mode (``validation`` the leak-free
    rule); the choice is recorded in each cell's ``evaluation.json`` (``lambda_source``).
lambda_sticky
    text: switch once. code: re-checked every 100 iterations, can switch back.
    paper mode: switch once, stay at lambda_low. reference mode: re-checked.
bf16_autocast (numerics, neither text nor code)
    text and code: float32 (PyTorch 0.4, no mixed precision).
    paper mode: bf16 autocast on CUDA when ``training.amp`` is true (the default) -- it changes the
    numerics, not the method (normalisation and losses stay float32); CPU runs are float32. reference mode: always float32.
validation carve-out (what a cell trains on)
    text and code: every cell trains on the whole official training split of fold 1.
    both modes: the same on a dataset where no cell uses a validation split. Where one does (a
    multi-task cell whose switched lambda is measured on validation, paper mode's default; every cell
    under ``selection: best_val``; Table I's cells under ``layer_selection: validation``), EVERY cell
    of the grid on that dataset holds out the same validation clips (like for like: the cells a
    table compares train on the same clips; :func:`caanet.grid.holds_validation`,
    :mod:`caanet.holdout`): whole locations, the same share of every device's clips
    (``training.val_fraction``; :func:`caanet.data.loader.carve_validation`), the same for every cell
    of a seed. ``evaluation.json`` records ``n_train_clips``/``n_validation_clips`` per device. A cell
    trained by hand outside the grid holds out only when it uses the split itself.
layer selection (Table I -> Tables II/III)
    text: each row's conditioning layer is the best of four **test** accuracies (Table I), reused by
    Tables II/III; this gives the conditional strategies a winner's-curse advantage over the
    baselines. code: the same.
    both modes: the text by default; ``layer_selection: validation`` chooses it on the validation
    split (leak-free). The report states which.
model selection
    text and code: the weights after the last iteration. both modes: the same by default;
    ``training.selection: best_val`` picks the best validation accuracy (never the test set).

Shared by both (not divergences, recorded for completeness): the predicted device becomes a
one-hot through argmax, so no gradient flows from the scene loss into CNN-d (reference item 4; what
that implies for Eq. 2's lambda is :data:`FINDINGS`); teacher forcing feeds the true device at test
time too, i.e. oracle information (item 5); conditioning is added to the conv output before
BatchNorm, ReLU after BN (item 6).

:data:`FINDINGS` lists what this reproduction found about the paper's method, each with the tests
that prove it (rendered in the report).
"""

from __future__ import annotations

from dataclasses import dataclass

from caanet.errors import ConfigError


@dataclass(frozen=True)
class Fidelity:
    name: str
    attention_class_act: str  # "softmax" | "log_softmax"
    attention_weight: str  # "sigmoid" | "sigmoid_plus_0.1_clamped"
    attention_init_zero: bool
    lr_decay: bool
    lambda_source: str  # "validation" | "test": the default of training.lambda_on
    lambda_sticky: bool
    bf16_autocast: bool  # whether training.amp may turn on bf16 autocast on CUDA (False: float32)


PAPER = Fidelity(
    name="paper",
    attention_class_act="softmax",
    attention_weight="sigmoid",
    attention_init_zero=False,
    lr_decay=True,
    lambda_source="validation",
    lambda_sticky=True,
    bf16_autocast=True,
)

REFERENCE = Fidelity(
    name="reference",
    attention_class_act="log_softmax",
    attention_weight="sigmoid_plus_0.1_clamped",
    attention_init_zero=True,
    lr_decay=False,
    lambda_source="test",
    lambda_sticky=False,
    bf16_autocast=False,
)

FIDELITIES = {f.name: f for f in (PAPER, REFERENCE)}


LAMBDA_ON = ("test", "validation")
"""Where Eq. 2's lambda rule may measure CNN-d's device accuracy (``training.lambda_on``)."""


def lambda_source(fidelity: str | Fidelity, lambda_on: str | None = None) -> str:
    """Where the lambda rule measures CNN-d: ``lambda_on`` when given, else the fidelity's default.

    Raises :class:`ConfigError` for a ``lambda_on`` outside :data:`LAMBDA_ON`."""
    if lambda_on is not None and lambda_on not in LAMBDA_ON:
        raise ConfigError(f"lambda_on={lambda_on!r} is not one of {list(LAMBDA_ON)} or null")
    return lambda_on or get_fidelity(fidelity).lambda_source


def get_fidelity(name: str | Fidelity) -> Fidelity:
    """Return the :class:`Fidelity` called ``name`` ('paper' or 'reference')."""
    if isinstance(name, Fidelity):
        return name
    try:
        return FIDELITIES[name]
    except KeyError:
        raise ConfigError(f"fidelity={name!r} is not one of {sorted(FIDELITIES)}") from None


# --------------------------------------------------------------------------------------------------
# Findings of this reproduction about the paper's method (issue 17), each with the tests proving it
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """A finding about the paper's method: ``name`` (an id), ``title`` (one line), ``text`` (plain
    text, a paragraph) and ``tests``: the pytest node ids (``path::function``) that prove it."""

    name: str
    title: str
    text: str
    tests: tuple[str, ...]


_T = "tests/test_lambda_finding.py::"

FINDINGS: tuple[Finding, ...] = (
    Finding(
        name="argmax_disjoint_losses",
        title="With the argmax conditioning, Eq. 2's two losses share no parameter",
        text=(
            "In multi-task CAA-Net CNN-d's prediction reaches the scene network only as the one-hot of its "
            "argmax (the paper, Sec. III-B; the authors' code detaches it), a constant to back-propagation. "
            "The scene loss has no gradient on any CNN-d tensor and the device loss none on the scene "
            "network (backbone, pooling head, Eq. 1's conditioning): L_scene + lambda * L_device updates "
            "two disjoint sets of parameters. So every argmax multi-task cell of one dataset and seed trains "
            "the same CNN-d, whatever its topology, pooling or conditioning layer (caanet initialises CNN-d "
            "from its own stream of the cell's seed, so this holds bit for bit), and lambda cannot trade one "
            "task off against the other."),
        tests=(_T + "test_argmax_losses_share_no_parameter",
               _T + "test_every_argmax_multi_task_cell_of_a_seed_trains_the_same_cnn_d"),
    ),
    Finding(
        name="constant_lambda_changes_nothing",
        title="A constant lambda changes nothing the scene branch learns, and (through Adam) almost nothing of CNN-d",
        text=(
            "Lambda multiplies only the device loss, whose gradient reaches only CNN-d; the scene branch "
            "trained with lambda = 1 and lambda = 0.3 is bit-identical. Adam's update is invariant to a "
            "constant scale of a parameter's gradient except through its eps (1e-8): CNN-d differs by less "
            "than 1e-5 after 20 steps, and with eps -> 0 and lambda a power of two (exact scaling in "
            "floating point) the whole model is bit-identical. While lambda is constant, Eq. 2's lambda has "
            "no effect."),
        tests=(_T + "test_argmax_scene_branch_is_bit_identical_for_two_constant_lambdas",
               _T + "test_adam_makes_a_constant_lambda_irrelevant_to_cnn_d_too"),
    ),
    Finding(
        name="switch_freezes_cnn_d",
        title="The switch to lambda_low acts only through Adam's second moment: it freezes CNN-d",
        text=(
            "With Adam's moments off (beta1 = beta2 = 0, eps -> 0) a run whose lambda switches ends "
            "bit-identical to one whose lambda does not; with the paper's betas the switch changes CNN-d, so "
            "its whole effect is the lag of Adam's moment estimates. For a stationary gradient, after the "
            "switch CNN-d's updates shrink to about lambda_low / sqrt(beta2^j + lambda_low^2) of their size "
            "and regain half of it only after j = ln(3 lambda_low^2) / ln(beta2) iterations: 17,313 at the "
            "paper's lambda_low = 1e-4 and beta2 = 0.999, longer than its 15,000-iteration schedule. In effect "
            "the switch stops CNN-d's training for the rest of the run rather than re-weighting two tasks."),
        tests=(_T + "test_the_switch_acts_on_cnn_d_only_through_adams_moments",
               _T + "test_after_the_switch_adam_freezes_cnn_d_for_ln_3lambda2_over_ln_beta2_iterations"),
    ),
    Finding(
        name="learned_lambda_argmax",
        title="The learned lambda (beyond the paper) cannot steer the argmax scene branch either",
        text=(
            "Under homoscedastic uncertainty weighting (Kendall et al.; strategy multi_task_learned) the "
            "argmax scene branch's gradient is exp(-s_scene) times that of L_scene alone: the effective "
            "lambda exp(s_scene - s_device) never enters it. The scene branch changes only through that "
            "slowly varying step-size factor, which Adam largely normalises away; the two argmax multi-task "
            "columns of Table IV differ through it and through CNN-d's different (but, for the scene "
            "network, constant) schedule, not through a trade-off between the tasks."),
        tests=(_T + "test_the_learned_lambda_scales_the_argmax_scene_gradient_and_nothing_else",
               _T + "test_argmax_losses_share_no_parameter"),
    ),
    Finding(
        name="posterior_conditioning",
        title="Beyond the paper: conditioning on CNN-d's posterior makes lambda matter",
        text=(
            "The strategies multi_task_posterior and multi_task_learned_posterior feed CNN-d's posterior "
            "(the softmax of its log-probabilities, not detached) to Eq. 1 instead of its argmax. The scene "
            "loss then reaches every CNN-d tensor, each cell trains its own CNN-d, and two constant lambdas "
            "give different scene weights: lambda trades off the shared parameters. Table IV runs both "
            "lambda rules with it beside the paper's argmax variant."),
        tests=(_T + "test_posterior_scene_loss_reaches_every_cnn_d_tensor",
               _T + "test_posterior_lambda_changes_the_trained_scene_network",
               _T + "test_posterior_cells_train_their_own_cnn_d"),
    ),
)
"""The findings of this reproduction about the paper's method, in the order the report gives them."""
