"""Experiments on top of the pipeline: the accuracy-vs-budget comparison of the policies."""
