"""Stage 2 of the pipeline: the MeDyate method
(memory cost model, LaRa, budget planner, sampler)."""
