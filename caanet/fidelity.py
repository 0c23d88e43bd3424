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
    both modes: the same, except cells that use a validation split (a multi-task cell whose lambda
    is measured on validation, every cell under ``selection: best_val``, Table I's cells under
    ``layer_selection: validation``); those hold out the same share of every device's clips
    (``training.val_fraction``, whole locations; :func:`caanet.data.loader.carve_validation`) and
    record ``n_train_clips``/``n_validation_clips`` per device in ``evaluation.json``.
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
one-hot through argmax, so no gradient flows from the scene loss into CNN-d (reference item 4);
teacher forcing feeds the true device at test time too, i.e. oracle information (item 5);
conditioning is added to the conv output before BatchNorm, ReLU after BN (item 6).
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
