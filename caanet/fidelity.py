"""Where the paper's text and the authors' published code differ: the full list, in one place.

caanet runs in one of two fidelity modes, chosen in the config (`training.fidelity`):

* ``paper``: what the article says (Sec. III-D Eq. 5-6, Sec. IV-B).
* ``reference``: what the authors' code (EIHW/CAANet_DCASE_ASC) does, so that its checkpoints load
  and its numbers can be reproduced. See ``../shared/reference/README.md`` items 1-5.

Every model or training decision that depends on the mode reads one field of :class:`Fidelity`;
no other module tests the mode's name. The divergences:

=====================  ==============================================  ==============================================
field                  paper                                           reference (authors' code)
=====================  ==============================================  ==============================================
attention_class_act    softmax over classes per bin (Eq. 6's C)        log_softmax; the output is the attention-
                       output log(Y), Y = sum A' * C (Eq. 6)           weighted sum of per-bin log-probabilities
attention_weight       sigmoid (Eq. 5's A)                             clamp(sigmoid(z) + 0.1, 0.1, 0.9)
attention_init_zero    default init of the attention 1x1 conv          attention conv weights start at zero
lr_decay               lr x 0.9 every 200 iterations                   never (its condition is always false)
lambda_source          device accuracy on a validation split carved    device accuracy on the test fold
                       from the training data (location-disjoint)
lambda_sticky          switch once, stay at lambda_low                 re-checked every 100 iterations, can switch back
mixed_precision        bf16 autocast on CUDA (``training.amp``), with  float32 throughout, as the authors trained
                       normalisation and losses in float32
=====================  ==============================================  ==============================================

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
    lambda_source: str  # "validation" | "test"
    lambda_sticky: bool
    mixed_precision: bool = True  # bf16 autocast on CUDA allowed (TrainConfig.amp); CPU is always float32


PAPER = Fidelity(
    name="paper",
    attention_class_act="softmax",
    attention_weight="sigmoid",
    attention_init_zero=False,
    lr_decay=True,
    lambda_source="validation",
    lambda_sticky=True,
)

REFERENCE = Fidelity(
    name="reference",
    attention_class_act="log_softmax",
    attention_weight="sigmoid_plus_0.1_clamped",
    attention_init_zero=True,
    lr_decay=False,
    lambda_source="test",
    lambda_sticky=False,
    mixed_precision=False,
)

FIDELITIES = {f.name: f for f in (PAPER, REFERENCE)}


def get_fidelity(name: str | Fidelity) -> Fidelity:
    """Return the :class:`Fidelity` called ``name`` ('paper' or 'reference')."""
    if isinstance(name, Fidelity):
        return name
    try:
        return FIDELITIES[name]
    except KeyError:
        raise ConfigError(f"fidelity={name!r} is not one of {sorted(FIDELITIES)}") from None
