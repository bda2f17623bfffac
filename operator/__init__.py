"""The radscale control plane, imported as ``radscale.operator``.

Plans a ScalingStudy into cells, renders KubeRay RayJobs, reconciles their state into the
study's status, and fits scaling laws. It never imports torch, ray, timm or triton, so the
operator image stays small; tests enforce it (tests/unit/test_layers.py).
"""

if __name__ == "operator":
    # This folder was imported under the stdlib's name: `python -m ...` run from the repo root in a
    # bare venv puts the root on sys.path before anything has loaded the stdlib `operator`. Become the
    # stdlib module instead of shadowing it (nothing of radscale is defined under that name).
    import os as _os

    __file__ = _os.path.join(_os.path.dirname(_os.__file__), "operator.py")
    with open(__file__) as _source:
        exec(compile(_source.read(), __file__, "exec"))
    del _os, _source
