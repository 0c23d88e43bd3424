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

Each test is run on the Avg over all devices (seen and unseen) and, where the dataset has unseen devices,
again on the unseen devices alone. They are :class:`caanet.stats.Comparison` objects of the family
``table5``: :func:`caanet.stats.run_comparisons` runs them with every statistic of Tables II-IV and Holm's
correction over the family decides them (:data:`TABLE5_STATISTIC`, the same as Table IV's).
"""

from __future__ import annotations

import itertools
from typing import Mapping

from caanet.errors import ConfigError
from caanet.grid import GridConfig, Row, grid_config, seeds_for
from caanet.spec import CONDITIONAL, CellSpec
from caanet.stats import TABLE4_STATISTIC, Comparison, model_label
from caanet.vocab import METHOD_REGISTRY, STRATEGY_REGISTRY

TABLE5_STATISTIC = TABLE4_STATISTIC
"""What decides Table V's tests: the family statistic of Table IV (:data:`caanet.stats.FAMILY_STATISTIC`, Holm
over the family ``table5``), on the Avg over all devices or over the unseen devices alone."""
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
    """Table V's family of tests (module docstring), per row of ``tables.table5.rows``: each test on all
    devices, then (a dataset with unseen devices) on the unseen devices alone; empty without
    ``tables.table5``. A test against a model the table lacks (joint training or a multi-task variant not
    among the strategies, or method ``none`` not among the methods) is left out."""
    cfg = grid_config(preset)
    if cfg.table5 is None or "table5" not in cfg.table_datasets:
        return []
    dataset = cfg.table_datasets["table5"]
    unseen = tuple(cfg.unseen_devices.get(dataset, ()))
    scopes = [("all", ())] + ([("unseen", unseen)] if unseen else [])
    models = table5_models(cfg)
    caanet = caanet_strategy(cfg.table5.strategies)
    references = [ref for ref in [BASELINE] + ([(caanet, "none")] if caanet is not None else []) if ref in models]
    out = []
    for row, (scope, devices), ref in itertools.product(cfg.table5.rows, scopes, references):
        seeds = tuple(seeds_for(cfg, row[1], "table5"))
        ref_spec = _spec(cfg, dataset, row, *ref, layers)
        for model in models:
            if model == ref or (ref != BASELINE and model[1] == "none"):
                continue
            out.append(Comparison(table="table5", dataset=dataset,
                                  comparison=f"{model_name(*model)} vs {model_name(*ref)}",
                                  row="-".join(row), model_a=(_spec(cfg, dataset, row, *model, layers),),
                                  model_b=(ref_spec,), seeds=seeds, family="table5", scope=scope, devices=devices))
    return out


__all__ = ["BASELINE", "TABLE5_STATISTIC", "caanet_strategy", "model_label", "model_name", "table5_comparisons",
           "table5_models"]
