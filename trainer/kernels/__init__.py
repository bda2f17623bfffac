"""Attention kernels: the Triton flash attention (:mod:`.attention`) beside its plain-torch
reference (:mod:`.reference`). Pure compute, no I/O. Import the modules, e.g.
``from radscale.trainer.kernels.attention import attention``."""
