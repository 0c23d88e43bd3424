"""Which cells hold a validation split out of their training clips (issue 17 §3: like for like).

Two rules, both here (no torch: the workflow calls them at parse time):

* **a cell's own need** (:func:`cell_uses_validation`): a cell uses a validation split when its
  strategy's lambda rule is Eq. 2's switch measured on validation (``multi_task``,
  ``multi_task_posterior`` under ``lambda_on: validation``, paper fidelity's default), when the
  weights are selected on it (``training.selection: best_val``), or when Table I's layer selection
  scores it (``grid.layer_selection: validation``);
* **the dataset's rule** (:func:`caanet.grid.holds_validation`): when any cell of a preset's grid on
  dataset D uses one, EVERY cell on D holds out the same validation clips (whole recording
  locations, :func:`caanet.data.loader.validation_split_filenames`: the same for every cell of a
  seed), so every cell a table compares trains on the same clips. The workflow passes the decision
  to :func:`caanet.training.train_cell` (``hold_validation``); a cell trained by hand outside the grid
  holds out only when it needs one itself.

The held-out clips are recorded per device in each ``evaluation.json`` (``n_train_clips``,
``n_validation_clips`` and their ``*_per_device``).
"""

from __future__ import annotations

from caanet.errors import ConfigError
from caanet.vocab import LAMBDA_RULE_NAMES, STRATEGY_REGISTRY

SELECTIONS = ("last", "best_val")
"""``training.selection``: the weights after the last iteration, or the best on validation."""


def cell_uses_validation(strategy: str, *, selection: str, lambda_source: str,
                         score_validation: bool = False) -> bool:
    """Whether a cell of ``strategy`` uses a validation split of its own accord.

    ``selection``: ``training.selection`` (:data:`SELECTIONS`); ``lambda_source``: where Eq. 2's switch
    measures CNN-d (``validation`` or ``test``, :func:`caanet.fidelity.lambda_source`);
    ``score_validation``: the cell is scored on validation for Table I's layer selection. Raises
    ConfigError for an unknown strategy, selection or source.
    """
    entry = STRATEGY_REGISTRY.get(strategy, ConfigError)
    if selection not in SELECTIONS:
        raise ConfigError(f"selection={selection!r} is not one of {list(SELECTIONS)}")
    if lambda_source not in ("validation", "test"):
        raise ConfigError(f"lambda_source={lambda_source!r} is not 'validation' or 'test'")
    switched_on_validation = entry.lambda_rule == LAMBDA_RULE_NAMES[0] and lambda_source == "validation"
    return selection == "best_val" or switched_on_validation or bool(score_validation)
