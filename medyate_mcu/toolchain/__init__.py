"""Stage 5 of the pipeline: building the generated C project (host compiler, later Cortex-M)."""
