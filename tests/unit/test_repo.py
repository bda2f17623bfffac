"""The repository itself: nothing it ignores is tracked (job logs, venvs, demo output)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import REPO


def test_no_tracked_file_is_one_the_repo_ignores():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "--cached", "--ignored", "--exclude-standard"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [], f"tracked but ignored (git rm --cached them): {out[:10]}"
