"""Experiments on top of the pipeline: the accuracy-vs-budget comparison of the policies.

budget_sweep.run_sweep drives a sweep; cells (one run each, pinned threads), prepare (a task's
data, LaRa ranking and backbones), cache (finished cells by key), executors (serial or Ray) and
report (CSV, Markdown, plot) are its parts; recommend reads its results."""
