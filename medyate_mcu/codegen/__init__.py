"""Stage 4 of the pipeline: C sources from the graph, the budget plan and the memory plan."""
