"""Evaluation: the RSNA mAP (``rsna_map``), image-level classification metrics (``classification``), scoring
of prediction sets (``scoring``) and the HTML report (``report``).

Submodules are imported on use; importing this package loads nothing heavy (no matplotlib).
"""
