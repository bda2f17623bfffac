"""Pretraining objectives, one loss per file, pure torch (no Ray, no I/O).

DINOv2 paradigm (RAD-DINO): :mod:`dino` (CLS self-distillation), :mod:`ibot` (masked patches),
:mod:`koleo` (uniform spreading), with :mod:`heads` (projection head) and :mod:`teacher` (EMA and
schedules). CLIP paradigm (MI2): :mod:`clip` and :mod:`unicl`, negatives gathered across workers
by :mod:`distributed`.
"""
