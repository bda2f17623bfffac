"""Identifiers that are safe to log: patient and study ids never leave this module unhashed. Pure."""

from __future__ import annotations

import hashlib


def hash_id(value: object, salt: str = "radscale") -> str:
    """A stable 16-hex-digit pseudonym for an identifier (patient id, study id, file path)."""
    return hashlib.sha256(f"{salt}\x00{value}".encode()).hexdigest()[:16]
