"""Make ``import timm`` work when torchvision's compiled ops cannot load beside this torch.

timm imports torchvision. On CPU-only machines the only torchvision wheel for torch 2.13.0 is a
CUDA build whose ``_C`` ops fail to load; ``torchvision/_meta_registrations.py`` then raises
``operator torchvision::nms does not exist`` at import. We guard each fake-op registration with
``torchvision.extension._has_ops()``. Idempotent, and a no-op wherever torchvision imports
cleanly (every matched GPU install). Run with the venv's python: ``python tools/fix_torchvision.py``.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

MARK = "# radscale: fake ops registered only when torchvision's compiled ops loaded"
HELPER = f'''
{MARK}
def _radscale_register_fake(name):
    if torchvision.extension._has_ops():
        return torch.library.register_fake(name)
    return lambda fn: fn

'''


def imports_cleanly() -> tuple[bool, str]:
    proc = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    return proc.returncode == 0, proc.stderr


def main() -> int:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        print("fix_torchvision: torchvision not installed; nothing to do")
        return 0
    ok, err = imports_cleanly()
    if ok:
        print("fix_torchvision: torchvision imports cleanly; nothing to do")
        return 0
    if "torchvision::" not in err:
        print(f"fix_torchvision: torchvision fails for another reason:\n{err}", file=sys.stderr)
        return 1
    path = Path(spec.submodule_search_locations[0]) / "_meta_registrations.py"
    text = path.read_text()
    if MARK not in text:
        # Insert the helper after the imports, then route every registration through it.
        anchor = "import torchvision.extension  # noqa: F401\n"
        if anchor not in text:
            print(f"fix_torchvision: unexpected layout of {path}", file=sys.stderr)
            return 1
        text = text.replace(anchor, anchor + HELPER, 1)
        text = re.sub(r"@torch\.library\.register_fake\((\"torchvision::)", r"@_radscale_register_fake(\1", text)
        path.write_text(text)
    ok, err = imports_cleanly()
    if not ok:
        print(f"fix_torchvision: still failing after the patch:\n{err}", file=sys.stderr)
        return 1
    print(f"fix_torchvision: patched {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
