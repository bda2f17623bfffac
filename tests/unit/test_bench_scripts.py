"""The one-command benchmarks run end to end (their numbers belong in docs/benchmarks.md, not here)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_attention_bench_dry_run_executes(tmp_path):
    out = tmp_path / "attention.json"
    proc = subprocess.run([sys.executable, "bench/attention.py", "--dry-run", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert {"dense_N17", "dense_N50", "multicrop"} <= set(data)
    ours = data["multicrop"]["radscale-triton packed"]
    assert ours["ms"] > 0 and ours["fwd+bwd"] > 0
    assert "speed-up vs best SDPA" in proc.stdout


def test_fits_bench_executes():
    proc = subprocess.run([sys.executable, "bench/fits.py", "--curves", "2", "--boot", "50"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "per curve: median" in proc.stdout
