"""One request up the tiers: the pipeline's steps, the climb, streaming decisions, probes, workloads."""
