"""radscale: data-scaling studies of radiology foundation models, on Kubernetes or local Ray.

The distribution has three import roots:

- ``radscale`` (this package): the API version and the cell bridge (:mod:`radscale.cells`),
  which both planes import. Pure data; no I/O, no torch.
- ``radscale.operator``: the control plane (kopf, KubeRay RayJobs, fits, CLI). Never imports torch or ray.
- ``radscale.trainer``: the data plane that runs inside a Ray job.
"""

__version__ = "0.1.0"
