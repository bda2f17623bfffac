"""The radscale control plane, imported as ``radscale.operator``.

Plans a ScalingStudy into cells, renders KubeRay RayJobs, reconciles their state into the
study's status, and fits scaling laws. It never imports torch, ray, timm or triton, so the
operator image stays small; a test and an import-linter contract enforce it.
"""
