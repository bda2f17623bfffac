"""Frozen-encoder evaluation: features, probes, segmentation, report generation, sweeps.

So far: :mod:`labeler` (a rule-based CheXpert-style report labeler, offline) and :mod:`probe`
(multi-label linear probe, AUROC with a bootstrap CI) and :mod:`segmentation_metrics` (Dice,
clDice)."""
