"""Stage 3 of the pipeline: the training step's schedule and the engine's static memory plan."""
