"""The training job of one table cell (paper Sec. III-B, IV-B) and its evaluation per recording device.

:func:`train_cell` trains the model a :class:`~caanet.spec.CellSpec` names on the cache's training
split and writes the contract's outputs (``docs/design.md``, "Cell spec and training"):
``model.pt``, ``metrics.csv``, ``evaluation.json``, ``predictions.csv`` and, for attention heads,
``attention.npz``; ``checkpoints/last.pt`` exists only while it runs.

Strategies (Fig. 2): ``single_device`` trains and tests on one device's clips; ``joint`` on all
devices without device input; ``teacher_forcing`` feeds the true device in training *and* at test
time (oracle information, recorded in ``evaluation.json``); ``multi_task`` adds CNN-d and the loss
``loss_scene + lambda * loss_device`` (Eq. 2), lambda following :class:`LambdaRule`;
``multi_task_learned`` (beyond the paper) learns the weights instead
(:mod:`caanet.models.loss_weighting`). Any number of devices: conditioned models are sized by the
devices seen in training, and test clips of unseen devices follow ``unseen_device`` (:mod:`caanet.devices`).

Everything that differs between the paper's text and the authors' code is read from
:class:`caanet.fidelity.Fidelity` (``lr_decay``, ``lambda_source``, ``lambda_sticky``).

The package, by concern (``docs/design.md``, "Cell spec and training"):

* :mod:`caanet.training.config`: :class:`TrainConfig` (checked against the config schema's
  ``$defs.training``), :func:`lr_at`, :class:`LambdaRule` and which cells hold a validation split;
* :mod:`caanet.training.trainer`: :class:`CellTrainer` (step, run, evaluate, ``state_dict``) and
  :func:`train_cell`, the job;
* :mod:`caanet.training.checkpoint`: :class:`TrainState`, reading and writing ``checkpoints/last.pt``;
* :mod:`caanet.training.outputs`: predictions, attention examples and the writers of the outputs;
* :mod:`caanet.training.batches`: the clips on the device, batch order, prediction in eval mode;
* :mod:`caanet.training.process`: torch device, threads, determinism and signals of the job.

The clips of a cell (:class:`~caanet.data.loader.CellData`, the validation carve-out, the
normalisation) come from :mod:`caanet.data.loader`, which reads the cache through its one reader
(:class:`caanet.features.FeatureCache`), opened once per job.

Robustness: batches are a pure function of ``(seed, iteration)``
(:func:`caanet.data.loader.batch_indices`); checkpoints (:meth:`CellTrainer.state_dict`) carry the model, optimiser, lambda rule, RNG
states and metrics so far; a killed job resumes bit-identically on CPU; SIGTERM/SIGINT finishes the
current iteration, checkpoints, and raises :class:`Preempted` (non-zero exit) so the scheduler
retries. The outputs are moved into the cell folder only while the job is still wanted (a training
server's child whose client has gone raises :class:`Abandoned` and publishes nothing). Unlike the
authors' code there is no evaluation of the whole training and test sets every 100 iterations: only
what the lambda rule (CNN-d alone) and model selection need.
"""

# Every name callers imported from the single module caanet/training.py is re-exported here, the
# private ones too (tests and benchmarks use _batch, _determinism, _RESUME_INDIFFERENT). They are
# imported on first use (PEP 562), so that ``caanet.training.config`` (TrainConfig, which the workflow
# checks at parse time) imports no torch: a Snakemake parse stays about a second shorter.
import importlib

_EXPORTS = {
    "caanet.data.loader": ("CellData", "Clips", "held_out_line", "seen_devices_first"),
    "caanet.training.batches": ("BatchOrder", "ClipTensors", "_autocast", "_batch", "_eval_mode", "device_accuracy",
                                "predict", "validation_accuracy"),
    "caanet.training.checkpoint": ("CHECKPOINT_FORMAT", "_RESUME_INDIFFERENT", "TrainState", "checkpoint_code_version",
                                   "fingerprint", "read_checkpoint", "write_checkpoint"),
    "caanet.training.config": ("SELECTIONS", "LambdaRule", "TrainConfig", "effective_config", "lambda_source",
                               "learned_lambda_columns", "learned_or_switched_rule", "lr_at", "needs_validation"),
    "caanet.training.outputs": ("METRICS_COLUMNS", "PREDICTION_COLUMNS", "Abandoned"),
    "caanet.training.process": ("LOGGER", "_determinism"),
    "caanet.training.trainer": ("CellTrainer", "Preempted", "check_spec", "prepare_data", "train_cell",
                                "validation_filenames"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
ENTRY_MODULES = ("caanet.training", *_EXPORTS)
"""The modules a training job runs from: the training stage's code hash follows their imports
(``rules/common.smk``, :func:`caanet.provenance.code_hash`), which the lazy re-exports above hide
from a scan of this file alone."""

__all__ = sorted(name for name in _MODULE_OF if not name.startswith("_"))


def __getattr__(name: str):
    """A re-exported name, imported from its module on first use (then cached in this module)."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'caanet.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))
