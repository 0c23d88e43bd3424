"""Table V (beyond the paper): CAA-Net and the field's device-robustness methods, its tests.

Table V (:func:`caanet.grid.table5_cells`) trains each registered device-robustness method
(:data:`caanet.vocab.METHOD_REGISTRY`) with the strategies of ``tables.table5.strategies`` on
``tables.table5.dataset``. Its family of tests (:func:`table5_comparisons`), per row and seed, one-tailed
("model A is better"):

* every model of the table other than joint training against **joint training** (method ``none``), the
  baseline: the methods alone (with joint training), CAA-Net (the multi-task variant, no method) and
  each method combined with it;
* every model with a method against **CAA-Net** (:func:`caanet_strategy`: the table's first multi-task
  strategy, method ``none``): does a method of the field beat the paper's mechanism, and does adding one
  to it help?

They are :class:`caanet.stats.Comparison` objects like Table IV's; :data:`TABLE5_STATISTIC` names the
statistic they are run with today (the Avg over all devices, seen and unseen); the device-stratified
tests and Holm's correction over the family replace it where ``caanet.stats`` provides them.
"""

from __future__ import annotations

from typing import Mapping

from caanet.errors import ConfigError
from caanet.grid import GridConfig, Row, grid_config, seeds_for
from caanet.spec import CONDITIONAL, CellSpec
from caanet.stats import Comparison, model_label
from caanet.vocab import METHOD_REGISTRY, STRATEGY_REGISTRY

TABLE5_STATISTIC = ("one-tailed two-proportion z-test on the Avg over all devices, seen and unseen "
                    "(n = test clips of every device)")
"""What decides Table V's tests for now (as Table IV's); see the module docstring."""
BASELINE = ("joint", "none")
"""Table V's baseline model: joint training without a method."""


def caanet_strategy(strategies) -> str | None:
    """CAA-Net's column of Table V: the first strategy of ``strategies`` whose device comes from CNN-d
    (a multi-task variant), or None when the table has none."""
    return next((s for s in strategies if STRATEGY_REGISTRY[s].device_source == "predicted"), None)


def model_name(strategy: str, method: str) -> str:
    """A Table V model's name in comparisons: ``multi_task``, ``joint+freq_mixstyle``, ..."""
    return strategy if method == "none" else f"{strategy}+{method}"


def _spec(cfg: GridConfig, dataset: str, row: Row, strategy: str, method: str,
          layers: Mapping[Row, int]) -> CellSpec:
    layer = None
    if strategy in CONDITIONAL:
        if row not in layers:
            raise ConfigError(f"table5 comparisons: no selected conditioning layer for row {row[0]}-{row[1]}")
        layer = int(layers[row])
    return CellSpec(dataset=dataset, topology=row[0], pooling=row[1], strategy=strategy, cond_layer=layer,
                    fidelity=cfg.fidelity, method=method).validate()


def table5_models(cfg: GridConfig) -> list[tuple[str, str]]:
    """Table V's models ``(strategy, method)`` in the table's order: strategies, then methods, each
    method with the strategies it combines with."""
    t5 = cfg.table5
    return [(s, m) for s in t5.strategies for m in t5.methods if METHOD_REGISTRY[m].combines_with(s)]


def table5_comparisons(preset: Mapping | GridConfig, layers: Mapping[Row, int]) -> list[Comparison]:
    """Table V's family of tests (module docstring), per row of ``tables.table5.rows``; empty without
    ``tables.table5``. A test against a model the table lacks (joint training or a multi-task variant not
    among the strategies, or method ``none`` not among the methods) is left out."""
    cfg = grid_config(preset)
    if cfg.table5 is None or "table5" not in cfg.table_datasets:
        return []
    dataset = cfg.table_datasets["table5"]
    models = table5_models(cfg)
    caanet = caanet_strategy(cfg.table5.strategies)
    references = [BASELINE] + ([(caanet, "none")] if caanet is not None else [])
    out = []
    for row in cfg.table5.rows:
        seeds = tuple(seeds_for(cfg, row[1], "table5"))
        for ref in references:
            if ref not in models:
                continue
            ref_spec = _spec(cfg, dataset, row, *ref, layers)
            for model in models:
                if model == ref or (ref != BASELINE and model[1] == "none"):
                    continue
                spec = _spec(cfg, dataset, row, *model, layers)
                out.append(Comparison(table="table5", dataset=dataset,
                                      comparison=f"{model_name(*model)} vs {model_name(*ref)}",
                                      row="-".join(row), model_a=(spec,), model_b=(ref_spec,), seeds=seeds))
    return out


__all__ = ["BASELINE", "TABLE5_STATISTIC", "caanet_strategy", "model_label", "model_name", "table5_comparisons",
           "table5_models"]
