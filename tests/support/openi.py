"""The real OpenI (Indiana) chest X-ray reports inside torchxrayvision's wheel: read at test time,
never copied (CC BY-NC-ND). Skips the calling test when the package is missing."""

from __future__ import annotations

import functools
import importlib.resources
import tarfile
import xml.etree.ElementTree as ET

import pytest


@functools.lru_cache(maxsize=1)
def _read() -> tuple[tuple[str, tuple[str, ...]], ...]:
    path = importlib.resources.files("torchxrayvision") / "data" / "NLMCXR_reports.tgz"
    docs = []
    with tarfile.open(str(path)) as tar:
        for member in tar.getmembers():
            if member.isfile():
                root = ET.fromstring(tar.extractfile(member).read())
                text = " ".join(a.text or "" for a in root.iter("AbstractText")
                                if a.get("Label") in ("FINDINGS", "IMPRESSION"))
                docs.append((text, tuple(m.text or "" for m in root.iter("major"))))
    return tuple(docs)


def reports() -> list[tuple[str, list[str]]]:
    """(findings + impression text, MeSH major headings) per report."""
    pytest.importorskip("torchxrayvision")
    return [(text, list(major)) for text, major in _read()]
