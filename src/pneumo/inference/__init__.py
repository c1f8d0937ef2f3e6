"""Inference internals behind ``pneumo.service.InferenceService``: per-model predictors (checkpoint, ensemble,
baseline), test-time augmentation, thresholds, and the input discovery / prefetching used by the CLI.

Front ends never import from here directly: they call ``InferenceService``.
"""
