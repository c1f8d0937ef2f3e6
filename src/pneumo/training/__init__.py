"""The training engine: ``fit`` (loop.py), ``TrainConfig`` (config.py), LR schedule, history files, DDP plumbing
and the operating-threshold search (``tune_thresholds``, reused by ``pneumo tune``).

Import the submodules directly (``from pneumo.training.loop import fit``); this package imports nothing
heavy at import time.
"""
