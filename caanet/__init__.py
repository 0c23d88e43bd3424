"""caanet: a reproducibility pipeline for CAA-Net (Ren, Kong, Han, Plumbley, Schuller, IEEE TMM 2020).

All logic of the Snakemake workflow lives in this package; `docs/design.md` maps each stage,
equation and table of the paper to the module that implements it.
"""

__version__ = "0.1.0"
