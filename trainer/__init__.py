"""The radscale data plane, imported as ``radscale.trainer``: what runs inside a Ray job.

Entry points (the contract with the control plane, fixed in :mod:`radscale.cells`)::

    python -m radscale.trainer.prepare  --cell <json-or-uri>
    python -m radscale.trainer.pretrain --cell <json-or-uri>
    python -m radscale.trainer.evaluate --cell <json-or-uri>
"""
