"""Frozen-encoder evaluation (``python -m radscale.trainer.evaluate --cell CELL``, see :mod:`job`).

:mod:`features` (cached CLS + patch tokens), :mod:`tasks` (the shared head-training protocol),
:mod:`probe` (classification, AUROC/AUPRC), :mod:`segment` (Dice/clDice), :mod:`report` (report
generation, BLEU-4/ROUGE-L/clinical F1 via :mod:`labeler`), :mod:`resample` (the test-patient
resamples shared by every cell of a study), :mod:`sweep` (Ray Tune per task)."""
