"""Frozen-encoder evaluation: features, probes, segmentation, report generation, sweeps.

So far: :mod:`labeler` (a rule-based CheXpert-style report labeler, offline)."""
