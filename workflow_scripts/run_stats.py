"""The paper's claims (claims.csv) and every family of tests of Tables II-V (comparisons.csv) (caanet.stats,
caanet.claims, caanet.field)."""
from caanet import aggregate, claims, field, stats
from caanet.io import write_csv_atomic
from caanet.workflow_support import logged

with logged(snakemake.log[0], "run_stats") as log:
    preset, layers = snakemake.params.preset, aggregate.read_layers(snakemake.input.layers)
    loader = stats.predictions_loader(snakemake.input.predictions)
    comparisons = (claims.paper_comparisons(preset, layers) + stats.table4_comparisons(preset, layers)
                   + field.table5_comparisons(preset, layers))
    df = stats.run_comparisons(comparisons, loader)
    judged = claims.run_claims(preset, layers, loader)
    write_csv_atomic(snakemake.output.comparisons, df)
    write_csv_atomic(snakemake.output.claims, judged)
    log.info("%d comparisons; claims:\n%s", len(df),
             judged[["claim", "status", "ours_a", "ours_b", "z", "p", "holds", "paired_p", "paper_p",
                     "paper_stratified_p"]].to_string(index=False))
